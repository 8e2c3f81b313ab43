"""``hkd predict``, ``hkd export`` and ``hkd cost`` on bad values: one line naming the argument or file, and
nothing written; a scan that may not be CT gets one warning line and is segmented."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from cli_errors import one_line_error, run_cli, snapshot
from conftest import LPS_AFFINE, make_case, write_nifti

from hkd.infer.runtime import META_PREPROCESSING, META_SPEC


def _scan(prepared: Path, case: str = "0004") -> Path:
    return prepared.parent / "RawData" / "Training" / "img" / f"img{case}.nii.gz"


def _refused(capsys, tmp_path, argv, words: str) -> None:
    before = snapshot(tmp_path)
    code, err = run_cli(capsys, *argv)
    line = one_line_error(err)
    assert code == 1 and words in line, line
    assert snapshot(tmp_path) == before, "something was written"


@pytest.mark.parametrize("extra, words", [
    (["--batch-size", "0"], "--batch-size 0: must be at least 1 (nothing was written)"),
    (["--batch-size", "-4"], "--batch-size -4: must be at least 1"),
    (["--threads", "-1"], "--threads -1: must be at least 0"),
])
def test_predict_counts(extra, words, student_ckpt, prepared, tmp_path, capsys):
    _refused(capsys, tmp_path, ["predict", "--model", student_ckpt, "--input", _scan(prepared), "--out",
                                tmp_path / "s.nii.gz", *extra], words)


@pytest.mark.parametrize("extra, words", [
    (["--calibration-slices", "0", "--int8"], "--calibration-slices 0: must be at least 1"),
    (["--calibration-slices", "-2", "--int8"], "--calibration-slices -2: must be at least 1"),
    (["--threads", "0"], "--threads 0: must be at least 1"),
])
def test_export_counts(extra, words, student_ckpt, prepared, tmp_path, capsys):
    _refused(capsys, tmp_path, ["export", "--model", student_ckpt, "--data", prepared, "--out", tmp_path / "s.onnx",
                                *extra], words)


def test_cost_values(student_ckpt, teacher_ckpt, tmp_path, capsys):
    out = ["--out-csv", tmp_path / "c.csv"]
    _refused(capsys, tmp_path, ["cost", "--models", f"s={student_ckpt}", "--volumes", "-1", *out],
             "--volumes -1: must be at least 0")
    _refused(capsys, tmp_path, ["cost", "--models", f"s={student_ckpt}", f"s={teacher_ckpt}", "--volumes", "0", *out],
             "--models: the name s is given twice")



def test_a_figure_table_without_its_columns_is_refused_naming_it(prepared, tmp_path, capsys):
    wrong = tmp_path / "summary.csv"
    wrong.write_text("model,dice\nx,0.5\n")
    _refused(capsys, tmp_path, ["figures", "--data", prepared, "--runs", "[]", "--summary", wrong,
                                "--out-dir", tmp_path / "figures"],
             f"--summary {wrong}: no column method, params, dice_mean")


def test_threads_above_the_machines_cpus_are_capped_and_said(student_ckpt, prepared, tmp_path, caplog):
    from hkd.cli import main

    many = (os.cpu_count() or 1) + 7
    with caplog.at_level(logging.WARNING, logger="hkd"):
        assert main(["predict", "--model", str(student_ckpt), "--input", str(_scan(prepared)), "--out",
                     str(tmp_path / "s.nii.gz"), "--threads", str(many), "--quiet"]) == 0
    assert f"--threads {many}: this machine has {os.cpu_count()} CPU(s); using {os.cpu_count()}" in caplog.text


def test_a_checkpoint_whose_outputs_are_not_its_classes_is_refused(student_ckpt, prepared, tmp_path, capsys):
    state = torch.load(student_ckpt, map_location="cpu", weights_only=True)
    prep = json.loads(state["preprocessing"])
    state["preprocessing"] = json.dumps({**prep, "classes": prep["classes"][:3]})
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    _refused(capsys, tmp_path, ["predict", "--model", bad, "--input", _scan(prepared), "--out", tmp_path / "s.nii.gz"],
             f"--model {bad}: the network gives {len(prep['classes'])} output channels, but its class list has 3")


def _fixed_onnx(path: Path, prep: dict, batch: int, size: int, classes: int) -> Path:
    """An ONNX model exported at one fixed batch and slice size, with hkd's metadata."""
    import onnx

    net = torch.nn.Conv2d(1, classes, 1).eval()
    torch.onnx.export(net, torch.zeros(batch, 1, size, size), str(path), dynamo=False)
    proto = onnx.load(str(path))
    for key, value in ((META_PREPROCESSING, json.dumps(prep)), (META_SPEC, "{}")):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


def test_an_onnx_of_fixed_size_is_refused_and_one_of_fixed_batch_runs(student_ckpt, prepared, tmp_path, capsys):
    prep = json.loads(torch.load(student_ckpt, map_location="cpu", weights_only=True)["preprocessing"])
    n, size = len(prep["classes"]), int(prep["image_size"])
    other = _fixed_onnx(tmp_path / "other.onnx", prep, 2, size + 16, n)
    _refused(capsys, tmp_path, ["predict", "--model", other, "--input", _scan(prepared), "--out",
                                tmp_path / "s.nii.gz"],
             f"--model {other}: takes slices of {size + 16} x {size + 16} pixels, but its preprocessing makes "
             f"{size} x {size} ones")
    fixed = _fixed_onnx(tmp_path / "fixed.onnx", prep, 3, size, n)  # batch 3: the scan's slices in padded batches
    code, err = run_cli(capsys, "predict", "--model", fixed, "--input", _scan(prepared), "--out",
                        tmp_path / "s.nii.gz", "--batch-size", "4", "--quiet")
    assert code == 0, err
    assert nib.load(tmp_path / "s.nii.gz").shape == nib.load(_scan(prepared)).shape


def _rgb(path: Path) -> Path:
    rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, LPS_AFFINE), path)
    return path


@pytest.mark.parametrize("kind, words", [
    ("rgb", "its voxels are [('R', 'u1'), ('G', 'u1'), ('B', 'u1')] (RGB), not one real value each"),
    ("complex", "its voxels are complex64 (complex), not one real value each"),
    ("no slices", "shape (8, 8, 0); a scan to segment is one 3-D volume with at least one slice"),
])
def test_a_scan_that_is_no_real_volume_is_refused(kind, words, student_ckpt, tmp_path, capsys):
    scan = tmp_path / "in" / "x.nii.gz"
    scan.parent.mkdir()
    if kind == "rgb":
        _rgb(scan)
    elif kind == "complex":
        write_nifti(scan, (make_case()[0] + 1j).astype(np.complex64))
    else:
        write_nifti(scan, np.zeros((8, 8, 0), np.int16))
    _refused(capsys, tmp_path, ["predict", "--model", student_ckpt, "--input", scan, "--out", tmp_path / "s.nii.gz"],
             f"{scan}: {words}")


def test_a_scan_that_may_not_be_ct_is_warned_of_once_and_segmented(student_ckpt, tmp_path, caplog):
    from hkd.cli import main

    image = make_case()[0]
    image[:4, :4] = -1000  # air in a corner: CT
    mri = write_nifti(tmp_path / "mri.nii.gz", (image - image.min()).astype(np.int16))  # nothing below 0
    long = write_nifti(tmp_path / "long.nii.gz", image, np.diag([1.0, 4.0, 2.5, 1.0]))
    for scan, words in ((mri, "does not look like CT"), (long, "in-plane pixels of 1 x 4 mm (4.0x longer than wide)")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hkd"):
            assert main(["predict", "--model", str(student_ckpt), "--input", str(scan), "--out",
                         str(tmp_path / f"seg_{scan.name}"), "--quiet"]) == 0
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(lines) == 1 and words in lines[0] and str(scan) in lines[0], lines


def test_a_read_only_output_folder_is_named_not_its_temporary(student_ckpt, prepared, tmp_path):
    import subprocess
    import sys

    from conftest import REPO
    from test_train_outputs import _read_only_cli

    folder = tmp_path / "ro"
    folder.mkdir()
    prefix = _read_only_cli(folder)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([*prefix, sys.executable, "-m", "hkd.cli", "predict", "--model", str(student_ckpt),
                          "--input", str(_scan(prepared)), "--out", str(folder / "s.nii.gz")],
                         capture_output=True, text=True, env=env)
    os.chmod(folder, 0o755)
    line = one_line_error(run.stderr)
    assert run.returncode == 1 and f"{folder / 's.nii.gz'}: cannot write there ({folder} is read-only" in line, line
    assert ".s.nii.gz." not in line and list(folder.iterdir()) == []
