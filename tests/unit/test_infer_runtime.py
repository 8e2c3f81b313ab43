"""hkd.infer.runtime: a model file in the runtime and precision asked for, or a one-line refusal."""

from __future__ import annotations

import numpy as np
import pytest

from hkd.cli import main
from hkd.errors import DataError
from hkd.infer import runtime


@pytest.fixture(scope="module")
def exported(student_ckpt, prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "s.onnx"
    assert main(["export", "--model", str(student_ckpt), "--data", str(prepared), "--out", str(out)]) == 0
    return out


def _slices(size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).random((3, 1, size, size), dtype=np.float32)


def test_every_fp32_runtime_computes_the_checkpoint_s_logits(student_ckpt, exported):
    """PyTorch, ONNX Runtime and OpenVINO (fp32 asked of it) agree within the export's 1e-4."""
    pytest.importorskip("openvino")
    reference = runtime.load(student_ckpt).run(_slices())
    for name in ("onnxruntime", "openvino"):
        model = runtime.load(exported, runtime=name)
        assert model.runtime == name and model.precision == "fp32"
        assert np.abs(model.run(_slices()) - reference).max() <= 1e-4, name


def test_bf16_is_a_reduced_precision_close_to_fp32(student_ckpt, exported):
    pytest.importorskip("openvino")
    if not runtime.openvino_bf16():
        pytest.skip("this CPU has no bf16 arithmetic")
    reference = runtime.load(student_ckpt).run(_slices())
    for model in (runtime.load(exported, runtime="openvino", precision="bf16"),
                  runtime.load(student_ckpt, precision="bf16")):
        assert model.precision == "bf16"
        assert 0 < np.abs(model.run(_slices()) - reference).max() < 0.2  # rounded, not another network


@pytest.mark.parametrize("which, options, words", [
    ("checkpoint", {"runtime": "onnxruntime"}, "a checkpoint runs in pytorch; export it first with hkd export"),
    ("onnx", {"runtime": "pytorch"}, "an ONNX file runs in onnxruntime or openvino"),
    ("onnx", {"precision": "bf16"}, "onnxruntime computes in fp32 on the CPU; bf16 runs in pytorch or openvino"),
    ("onnx", {"precision": "fp16"}, "--precision fp16: one of fp32, bf16"),
])
def test_a_runtime_or_precision_a_file_cannot_run_in_is_refused(which, options, words, student_ckpt, exported):
    with pytest.raises(DataError, match=words.replace("(", r"\(")):
        runtime.load(student_ckpt if which == "checkpoint" else exported, **options)


def test_predict_runs_in_the_runtime_asked_and_says_so(exported, prepared, tmp_path):
    pytest.importorskip("openvino")
    import json

    scan = prepared.parent / "RawData" / "Training" / "img" / "img0004.nii.gz"
    for name in ("onnxruntime", "openvino"):
        out = tmp_path / f"{name}.nii.gz"
        assert main(["predict", "--model", str(exported), "--input", str(scan), "--out", str(out), "--runtime", name,
                     "--quiet"]) == 0
        info = json.loads((tmp_path / f"{name}.json").read_text())
        assert info["runtime"] == name and info["precision"] == "fp32"
    import nibabel as nib

    a, b = (np.asanyarray(nib.load(tmp_path / f"{n}.nii.gz").dataobj) for n in ("onnxruntime", "openvino"))
    assert (a == b).mean() >= 0.9999
