"""hkd export: the network alone as ONNX, checked against ONNX Runtime on real slices; int8 measured."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hkd.cli import main
from hkd.errors import DataError


@pytest.fixture(scope="module")
def exported(student_ckpt, prepared, tmp_path_factory) -> tuple[Path, dict, str]:
    import io
    from contextlib import redirect_stdout

    out = tmp_path_factory.mktemp("export")
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["export", "--model", str(student_ckpt), "--data", str(prepared), "--out", str(out / "s.onnx"),
                     "--report", str(out / "s.json")]) == 0
    return out / "s.onnx", json.loads((out / "s.json").read_text()), buf.getvalue()


@pytest.mark.slow
@pytest.mark.budget(60)  # its set-up exports the student through torch.export (about 20 s on 2 busy cores)
def test_export_matches_pytorch_on_test_slices(exported, student_ckpt):
    import onnx

    from hkd.infer.runtime import load

    path, report, printed = exported
    print(printed)
    parity = report["parity"]
    assert parity["max_abs_logit_diff"] <= 1e-4 and parity["argmax_agreement"] >= 0.9999
    assert parity["slices"] == 12  # the test case's 12 slices
    assert "max |logit difference|" in printed and "arg-max agreement" in printed
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["hkd.preprocessing"])["classes"][5] == "liver" and meta["hkd.kind"] == "fp32"
    import hkd  # no exporter stack trace naming the folder hkd runs from (a shared file would carry it)

    assert str(Path(hkd.__file__).resolve().parent.parent).encode() not in path.read_bytes()
    assert not [n.name for n in proto.graph.node if n.metadata_props]
    # the network alone: its initialisers are the network's parameters in its inference form (the squeeze and
    # head weights split by input part, hkd.models.squeezeunet_inference), the resize scales, nothing else
    from hkd.models import count_parameters
    from hkd.models.inference import inference_network

    network = load(student_ckpt).network
    fast = inference_network(network, load(student_ckpt).spec)
    assert count_parameters(fast) == count_parameters(network)
    named = {t.name for t in proto.graph.initializer if t.name in fast.state_dict()}
    assert {k for k in fast.state_dict() if k.endswith("weight")} <= named
    others = [int(np.prod(t.dims)) for t in proto.graph.initializer if t.name not in named]
    assert sum(others) <= 16, others  # nothing of a teacher, optimiser or adapter
    # dynamic batch and spatial size
    onnx_model, torch_model = load(path), load(student_ckpt)
    x = np.random.default_rng(0).random((3, 1, 64, 48), dtype=np.float32)
    np.testing.assert_allclose(onnx_model.run(x), torch_model.run(x), atol=1e-4)


@pytest.mark.slow
def test_predict_with_the_onnx_file_matches_the_checkpoint(exported, student_ckpt, prepared, tmp_path):
    path = exported[0]
    scan = prepared.parent / "RawData" / "Training" / "img" / "img0005.nii.gz"
    for model, out in ((path, tmp_path / "onnx.nii.gz"), (student_ckpt, tmp_path / "torch.nii.gz")):
        assert main(["predict", "--model", str(model), "--input", str(scan), "--out", str(out), "--quiet"]) == 0
    a, b = (np.asanyarray(nib.load(tmp_path / f).dataobj) for f in ("onnx.nii.gz", "torch.nii.gz"))
    assert (a == b).mean() >= 0.9999
    info = json.loads(nib.load(tmp_path / "onnx.nii.gz").header.extensions[-1].get_content())["hkd_predict"]
    assert info["runtime"] == "onnxruntime"


@pytest.mark.slow
@pytest.mark.budget(60)  # calibration, quantisation and both runtimes timed
def test_int8_reports_dice_change_and_latency(student_ckpt, prepared, tmp_path, capsys):
    out = tmp_path / "s8.onnx"
    assert main(["export", "--model", str(student_ckpt), "--data", str(prepared), "--out", str(out), "--int8",
                 "--int8-dice-loss", "1", "--calibration-slices", "16", "--report", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    print(printed)
    q = json.loads((tmp_path / "r.json").read_text())["int8"]
    assert set(q["dice"]) == {"spleen", "right_kidney", "left_kidney", "gallbladder", "liver", "stomach", "aorta",
                              "pancreas"}
    assert all(abs(d["change"] - (d["int8"] - d["fp32"])) < 1e-12 for d in q["dice"].values())
    assert q["latency_ms"]["int8"]["runs"] >= 20 and q["latency_ms"]["threads"] == 1
    assert "int8: mean test Dice" in printed and "95% CI" in printed
    mean = q["mean_dice"]  # the change over the test cases, with a paired bootstrap CI over them
    assert mean["change"] == pytest.approx(mean["int8"] - mean["fp32"], abs=1e-12)
    assert mean["ci95"][0] <= mean["change"] <= mean["ci95"][1]
    assert mean["cases"] == len(json.loads((prepared / "dataset.json").read_text())["split"]["test"])
    assert mean["limit"] == 1 and "the loss allowed 1.0" in printed
    choice = q["choice"]  # what stayed float was chosen on the validation cases, within the limit
    assert choice["part"] == "val" and choice["val_mean_dice_loss"] <= choice["limit"] == 1
    assert set(choice["kept_float"]) <= {n.name for n in onnx_nodes(tmp_path / "s8.onnx")} and choice["layers"] > 0
    nodes = onnx_nodes(out)
    made_by = {o: n.op_type for n in nodes for o in n.output}
    quantised = {made_by.get(n.input[0], "input") for n in nodes if n.op_type == "QuantizeLinear"}
    assert "Conv" in quantised and "Add" not in quantised, quantised  # the inference form's sums stay float
    # SqueezeUNet's decoder and head stay float (hkd.models.inference.INT8_FLOAT_PARTS), the rest is int8
    assert choice["float_parts"] == ["decoder.", "head."] and not choice["kept_for_dice"]
    dequantised = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    reads_int8 = {n.input[1].split("_DequantizeLinear")[0]: n.input[0] in dequantised for n in nodes
                  if n.op_type == "Conv"}
    assert {w for w, q in reads_int8.items() if not q} == {w for w in reads_int8 if w.startswith(("decoder.", "head."))}
    assert len(choice["kept_float"]) == len([w for w in reads_int8 if not reads_int8[w]]) < choice["layers"]


def onnx_nodes(path):
    import onnx

    return list(onnx.load(str(path)).graph.node)


def test_export_refusals(student_ckpt, prepared, tmp_path, capsys):
    assert main(["export", "--model", str(student_ckpt), "--data", str(prepared), "--out", str(tmp_path / "s.pt")]) == 1
    assert "written as .onnx" in capsys.readouterr().err
    foreign = tmp_path / "mine.onnx"
    foreign.write_bytes(b"my own model")
    assert main(["export", "--model", str(student_ckpt), "--data", str(prepared), "--out", str(foreign)]) == 1
    assert "exists and hkd did not write it" in capsys.readouterr().err and foreign.read_bytes() == b"my own model"


def test_several_checkpoints_choose_the_best_validation_dice(tmp_path):
    from hkd.commands.deploy import best_on_validation
    from hkd.errors import DataError

    runs = []
    for name, dice in (("a", 0.4), ("b", 0.6), ("c", 0.5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"val_dice": dice}))
        runs.append(tmp_path / name / "best.pt")
    assert best_on_validation(runs) == tmp_path / "b" / "best.pt"
    assert best_on_validation(runs[:1]) == runs[0]
    with pytest.raises(DataError, match="no validation Dice"):
        best_on_validation([*runs, tmp_path / "d" / "best.pt"])


@pytest.mark.slow
def test_the_study_exports_its_chosen_students_and_measures_their_cost(default_study):
    import pandas as pd

    out, root = default_study.out, default_study.root
    report = json.loads((out / "deploy" / "student_w0.25.json").read_text())
    print(json.dumps(report["parity"]))
    assert report["parity"]["max_abs_logit_diff"] <= 1e-4 and report["parity"]["argmax_agreement"] >= 0.9999
    chosen = json.loads((root / Path(report["export"]["checkpoint"]).parent / "metrics.json").read_text())["val_dice"]
    others = [json.loads((root / Path(c).parent / "metrics.json").read_text())["val_dice"]
              for c in report["export"]["chosen_from"]]
    assert chosen == max(others)
    cost = pd.read_csv(out / "tables" / "cost.csv")
    print(cost.to_string())
    from hkd.deploy.cost import runtimes_to_measure

    assert set(cost["model"]) == {"teacher", "0.25"}
    assert set(zip(cost["runtime"], cost["precision"])) == set(runtimes_to_measure(onnx=True, int8=True))
    assert (cost["runs"] >= 20).all() and (out / "figures" / "dice_vs_cost.png").stat().st_size > 10_000


def test_a_checkpoint_alone_exports_checked_on_a_generated_case(student_ckpt, prepared, tmp_path, capsys):
    """Without --data the parity runs on a generated phantom case prepared as the checkpoint records, the report
    says so, and the file predicts as the one exported with --data does; --int8 still needs the data."""
    alone, with_data = tmp_path / "alone.onnx", tmp_path / "data.onnx"
    assert main(["export", "--model", str(student_ckpt), "--out", str(alone), "--report",
                 str(tmp_path / "alone.json")]) == 0
    assert "slices of a generated phantom case, prepared as the checkpoint records (no --data)" in \
        capsys.readouterr().out
    report = json.loads((tmp_path / "alone.json").read_text())
    assert report["parity"]["on"].startswith("a generated phantom case") and report["parity"]["slices"] == 12
    assert report["parity"]["max_abs_logit_diff"] <= 1e-4
    assert main(["export", "--model", str(student_ckpt), "--data", str(prepared), "--out", str(with_data)]) == 0
    capsys.readouterr()
    from hkd.infer import runtime

    x = np.random.default_rng(1).random((2, 1, 32, 32), dtype=np.float32)
    assert np.array_equal(runtime.load(alone).run(x), runtime.load(with_data).run(x))
    assert main(["export", "--model", str(student_ckpt), "--out", str(tmp_path / "q.onnx"), "--int8"]) == 1
    assert "--int8: needs --data" in capsys.readouterr().err and not (tmp_path / "q.onnx").exists()


@pytest.mark.slow
@pytest.mark.budget(90)  # every layer measured and kept in float one at a time
def test_int8_that_cannot_keep_the_dice_is_refused_and_nothing_is_written(student_ckpt, prepared, tmp_path, capsys,
                                                                        monkeypatch):
    from hkd.deploy import export

    monkeypatch.setattr(export, "INT8_DICE_LOSS", -1.0)  # no model can gain a whole Dice point
    out = tmp_path / "s8.onnx"
    assert main(["export", "--model", str(student_ckpt), "--data", str(prepared), "--out", str(out), "--int8",
                 "--calibration-slices", "16"]) == 1
    err = capsys.readouterr().err
    assert "layers kept in float, the validation Dice drops by" in err and "nothing was written" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_int8_losing_more_test_dice_than_the_limit_is_refused():
    """An int8 model is offered only where it keeps the mean test Dice within the limit; a gain passes."""
    from hkd.deploy.export import INT8_DICE_LOSS, check_int8_test_loss

    def report(change):
        return {"mean_dice": {"change": change, "ci95": [change - 0.004, change + 0.004], "cases": 10},
                "dice": {"spleen": {"change": change / 2}, "gallbladder": {"change": 4 * change},
                         "liver": {"change": 0.0}}}

    with pytest.raises(DataError, match=r"loses 0\.0074 mean test Dice .*gallbladder -0\.0296, spleen -0\.0037\), "
                                        r"more than the limit of 0\.005; nothing was written"):
        check_int8_test_loss(Path("best.pt"), report(-0.0074), INT8_DICE_LOSS)
    for change in (-0.005, -0.0049, 0.0, 0.02):
        check_int8_test_loss(Path("best.pt"), report(change), INT8_DICE_LOSS)
    check_int8_test_loss(Path("best.pt"), report(-0.0074), 0.01)


def test_the_int8_limit_is_checked_before_any_work(student_ckpt, tmp_path, capsys):
    out = tmp_path / "s.onnx"
    for extra, message in ((["--int8-dice-loss", "0.01"], "--int8-dice-loss: a limit of --int8"),
                           (["--int8", "--int8-dice-loss", "-0.1"], "--int8-dice-loss -0.1: must be at least 0")):
        assert main(["export", "--model", str(student_ckpt), "--out", str(out), *extra]) == 1
        assert message in capsys.readouterr().err and not out.exists()


def test_the_exporters_info_lines_stay_out_of_a_jobs_log(caplog):
    """A job logs at INFO: the exporter's graph optimiser would add hundreds of lines per model to it."""
    import logging

    from hkd.deploy.export import EXPORT_LOGGERS, to_onnx
    from hkd.models import build_model

    spec = {"arch": "squeezeunet", "width": 0.25, "num_classes": 9}
    before = [logging.getLogger(name).level for name in EXPORT_LOGGERS]
    with caplog.at_level(logging.INFO):
        to_onnx(build_model(spec).eval(), 32, spec)
    assert not [r.getMessage() for r in caplog.records if r.name.startswith(EXPORT_LOGGERS)]
    assert [logging.getLogger(name).level for name in EXPORT_LOGGERS] == before  # as they were
