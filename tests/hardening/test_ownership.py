"""hkd replaces only what it wrote: a file is hkd's when the record of its folder lists it, written by the same
command, unchanged since (``hkd/record.py``); every path a command reads is an input its outputs may not
touch; and no file makes hkd import code. Each test is one way a user's files were destroyed before.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from cli_errors import one_line_error, run_cli, snapshot

from hkd import record
from hkd.cli import main

SMALL = {"model": {"arch": "squeezeunet", "width": 0.25}, "epochs": 1, "batch_size": 8, "device": "cpu",
         "method": "scratch"}


def _scan(prepared: Path, case: str = "0004") -> Path:
    return prepared.parent / "RawData" / "Training" / "img" / f"img{case}.nii.gz"


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory) -> Path:
    """A run folder that ``hkd train`` wrote (its files recorded as that command's)."""
    out = tmp_path_factory.mktemp("own") / "run"
    assert main(["train", "--data", str(prepared), "--params", json.dumps(SMALL), "--out", str(out), "--quiet"]) == 0
    return out


def test_cost_never_writes_its_table_over_a_model_it_reads(trained, tmp_path, capsys):
    ckpt = tmp_path / "S.pt"
    shutil.copy(trained / "best.pt", ckpt)
    before = ckpt.read_bytes()
    code, err = run_cli(capsys, "cost", "--models", f"s={ckpt}", "--volumes", 0, "--out-csv", ckpt)
    line = one_line_error(err)
    assert code == 1 and f"--out-csv {ckpt} is the input --models {ckpt}" in line, line
    assert ckpt.read_bytes() == before


def test_export_never_replaces_a_file_another_command_wrote(trained, student_ckpt, prepared, tmp_path, capsys):
    teacher = trained / "best.pt"  # written by hkd train
    before = teacher.read_bytes()
    code, err = run_cli(capsys, "export", "--model", student_ckpt, "--data", prepared, "--out", tmp_path / "y.onnx",
                        "--report", teacher)
    line = one_line_error(err)
    assert code == 1 and f"{teacher} exists and hkd train wrote it, and hkd export replaces only files it wrote " \
                         "itself" in line, line
    assert teacher.read_bytes() == before and not (tmp_path / "y.onnx").exists()


def test_predict_never_writes_a_cases_json_over_the_preprocessing_it_reads(teacher_ckpt, prepared, tmp_path, capsys):
    folder = tmp_path / "P"
    folder.mkdir()
    shutil.copy(prepared / "dataset.json", folder / "dataset.json")
    before = snapshot(folder)
    code, err = run_cli(capsys, "predict", "--model", teacher_ckpt, "--preprocessing", folder / "dataset.json",
                        "--input", _scan(prepared), "--out", folder / "dataset.nii.gz", "--quiet")
    line = one_line_error(err)
    assert code == 1 and f"{folder / 'dataset.json'} is the input --preprocessing" in line, line
    assert snapshot(folder) == before


def test_predict_never_replaces_a_corrected_segmentation_or_a_users_files(teacher_ckpt, prepared, tmp_path, capsys):
    seg = tmp_path / "a.nii.gz"
    argv = ["predict", "--model", teacher_ckpt, "--input", _scan(prepared), "--out", seg, "--quiet"]
    assert run_cli(capsys, *argv)[0] == 0
    assert run_cli(capsys, *argv)[0] == 0  # its own output, unchanged: replaced by the rerun
    image = nib.load(seg)  # corrected by hand, header kept (the extension naming hkd predict too)
    labels = np.asarray(image.dataobj).copy()
    labels[0, 0, 0] = 1 + labels[0, 0, 0] % 2
    nib.save(type(image)(labels, image.affine, image.header), seg)
    before = seg.read_bytes()
    code, err = run_cli(capsys, *argv)
    line = one_line_error(err)
    assert code == 1 and f"{seg} exists and it was changed since hkd wrote it" in line, line
    assert seg.read_bytes() == before

    scans, out = tmp_path / "scans", tmp_path / "segs"  # an earlier output folder, where the user put files
    scans.mkdir()
    shutil.copy(_scan(prepared, "0004"), scans)
    folder_argv = ["predict", "--model", teacher_ckpt, "--input", scans, "--out", out, "--quiet"]
    assert run_cli(capsys, *folder_argv)[0] == 0
    shutil.copy(_scan(prepared, "0005"), scans)  # a new scan, whose outputs' names the user's files have
    (out / "img0005.nii.gz").write_bytes(_scan(prepared, "0005").read_bytes())
    (out / "img0005.json").write_text('{"notes": "mine"}')
    before = snapshot(out)
    code, err = run_cli(capsys, *folder_argv)
    line = one_line_error(err)
    assert code == 1 and f"{out / 'img0005.nii.gz'} exists and hkd did not write it" in line, line
    assert snapshot(out) == before


def test_a_folder_the_user_made_stays_theirs(teacher_ckpt, prepared, tmp_path, capsys):
    folder = tmp_path / "E"
    folder.mkdir()
    assert run_cli(capsys, "predict", "--model", teacher_ckpt, "--input", _scan(prepared).parent, "--out", folder,
                   "--quiet")[0] == 0
    (folder / "thesis.txt").write_text("years of work")
    (folder / "photos").mkdir()
    (folder / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    before = snapshot(folder)
    code, err = run_cli(capsys, "phantom", "--out", folder, "--cases", 2)
    line = one_line_error(err)
    assert code == 1 and f"{folder} exists and holds " in line and "which hkd may not replace" in line, line
    assert snapshot(folder) == before
    for name in ("thesis.txt", "photos"):  # even with only hkd predict's files left, not phantom's to replace
        shutil.rmtree(folder / name) if name == "photos" else (folder / name).unlink()
    code, err = run_cli(capsys, "phantom", "--out", folder, "--cases", 2)
    assert code == 1 and "hkd predict wrote it, and hkd phantom replaces only files it wrote itself" in \
        one_line_error(err)


IMPORTED = """
import os, pathlib
pathlib.Path(os.environ["HKD_TEST_IMPORTED"]).write_text("imported")

import torch


class X(torch.nn.Module):
    pass
"""


@pytest.mark.parametrize("command", ["predict", "export", "cost"])
def test_a_checkpoint_never_makes_hkd_import_a_module(command, student_ckpt, prepared, tmp_path):
    """A checkpoint's spec naming a module (arch: module) imports it only when the user named it."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "antigravity_hkd.py").write_text(IMPORTED)
    state = torch.load(student_ckpt, map_location="cpu", weights_only=True)
    state["spec"] = json.dumps({"arch": "module", "name": "antigravity_hkd:X"})
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    marker = tmp_path / "imported.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "mods"), os.environ.get("PYTHONPATH", "")]),
           "HKD_TEST_IMPORTED": str(marker)}
    env.pop("HKD_MODULES", None)
    argv = {"predict": ["--model", bad, "--input", _scan(prepared), "--out", tmp_path / "s.nii.gz"],
            "export": ["--model", bad, "--data", prepared, "--out", tmp_path / "s.onnx"],
            "cost": ["--models", f"s={bad}", "--volumes", "0", "--out-csv", tmp_path / "c.csv"]}[command]
    run = subprocess.run([sys.executable, "-m", "hkd.cli", command, *map(str, argv)], capture_output=True, text=True,
                         env=env)
    line = one_line_error(run.stderr)
    assert run.returncode == 1 and "asks to import the module 'antigravity_hkd', which no config or option named, " \
                                   "so it was not imported" in line, line
    assert "--allow-module antigravity_hkd" in line, line
    assert not marker.exists()
    allowed = subprocess.run([sys.executable, "-m", "hkd.cli", command, *map(str, argv), "--allow-module",
                              "antigravity_hkd"], capture_output=True, text=True, env=env)
    assert marker.exists(), allowed.stderr  # named by the user: imported (X is no network of 9 classes)
    assert allowed.returncode == 1


def test_the_record_lists_what_a_command_wrote_with_size_and_hash(trained):
    rec = record.read(trained)
    assert rec["created"] is True and set(rec["files"]) == {"best.pt", "last.pt", "log.csv", "metrics.json"}
    entry = rec["files"]["best.pt"]
    assert entry["by"] == "hkd train" and entry["size"] == (trained / "best.pt").stat().st_size
    assert entry["sha256"] == record.sha256(trained / "best.pt") and not rec["writing"]


@pytest.mark.parametrize("command", ["predict", "export"])
def test_a_rerun_removes_what_a_killed_write_left_of_its_outputs(command, student_ckpt, prepared, tmp_path, capsys):
    out = tmp_path / ("a.nii.gz" if command == "predict" else "a.onnx")
    left = tmp_path / f".{out.name}.k1ll3d00{''.join(out.suffixes)}"  # the temporary a killed write made
    left.write_bytes(b"half")
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    with record.updating(tmp_path) as rec:
        rec["writing"][left.name] = {"pid": gone, "host": socket.gethostname(), "kind": "file",
                                     "by": f"hkd {command}"}
    mine = tmp_path / f".{out.name}.notes0000{''.join(out.suffixes)}"  # named alike, never recorded: the user's
    mine.write_bytes(b"mine")
    argv = {"predict": ["--model", student_ckpt, "--input", _scan(prepared), "--out", out, "--quiet"],
            "export": ["--model", student_ckpt, "--data", prepared, "--out", out]}[command]
    code, err = run_cli(capsys, command, *argv)
    assert code == 0, err
    assert not left.exists() and mine.read_bytes() == b"mine" and out.exists()
    assert not record.read(tmp_path)["writing"]
