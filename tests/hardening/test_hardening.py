"""Bad input never loses data and always gets one line naming the file, key or argument.

One test (or more) per row of the bad-input audit: inputs the commands must refuse to overwrite,
geometry and values checked where data enters, foreign checkpoints, reruns that see every input,
one writer per output folder, downloads that end, checks in the dry run, empty evaluations.
"""

from __future__ import annotations

import importlib.machinery
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from hkd.cli import main
from hkd.data.downloaders import synapse
from hkd.data.nifti import load_raw_case
from hkd.data.readers.rawdata import find_raw_cases
from hkd.data.split import make_split
from hkd.errors import DataError
from hkd.lock import LOCK_NAME, LockError, OutLock
from hkd.models.checkpoint import load_model
from hkd.train.trainer import train

from conftest import LPS_AFFINE, REPO, make_case, write_nifti, write_rawdata
import helpers
from helpers import merge as _merge


def run_cli(capsys, *argv) -> tuple[int, str]:
    """Exit code and stderr of ``hkd ARGV``."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_line_error(err: str) -> str:
    """The error must be a single line and no traceback."""
    lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line and " WARNING " not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (or the file itself) with its bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): p.read_bytes() for p in files}


# --- row 1: an output that is, contains or lies inside an input is refused ------------------------

def _zip_of(rawdata: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for p in rawdata.rglob("*.nii.gz"):
            z.write(p, "RawData/" + p.relative_to(rawdata).as_posix())
    return path


def _commands(tmp: Path, raw: Path):
    """(command line, the input it must not destroy) for every command that writes and has inputs."""
    zip_path = _zip_of(raw, tmp / "zips" / "RawData.zip")
    split = tmp / "split.json"
    split.write_text(json.dumps({"train": ["0001", "0002", "0003"], "val": ["0004"], "test": ["0005"]}))
    prep = {"image_size": 16, "hu_window": [-125, 275], "classes": ["background", "liver"],
            "label_map": {"0": 0, "6": 1}}
    data = tmp / "prepared"
    (data / "volumes").mkdir(parents=True)
    (data / "dataset.json").write_text("{}")
    run = tmp / "run"
    run.mkdir()
    (run / "metrics.json").write_text('{"status": "ok"}')
    evals = tmp / "eval.csv"
    evals.write_text("model,value\n")
    return {
        "extract into the zip's folder": (["extract", "--zip", zip_path, "--out", zip_path.parent], zip_path),
        "extract onto the zip": (["extract", "--zip", zip_path, "--out", zip_path], zip_path),
        "prepare onto the source": (["prepare", "--source", raw, "--split", split, "--params", json.dumps(prep),
                                     "--out", raw], raw),
        "prepare into the source's parent": (["prepare", "--source", raw, "--split", split,
                                              "--params", json.dumps(prep), "--out", raw.parent], raw),
        "split inside the source": (["split", "--source", raw, "--out", raw / "split.json"], raw),
        "split onto the split file": (["split", "--source", raw, "--preset", "file", "--file", split,
                                       "--out", split], split),
        "train onto the data": (["train", "--data", data, "--params", '{"model": {"arch": "squeezeunet"}}',
                                 "--out", data], data),
        "train work folder holding the data": (["train", "--data", data, "--params",
                                                '{"model": {"arch": "squeezeunet"}}', "--out", tmp / "t",
                                                "--work", tmp], data),
        "teacher-cache inside the data": (["teacher-cache", "--teacher", run / "best.pt", "--data", data,
                                           "--method", "logits", "--out", data / "cache.h5"], data),
        "evaluate inside the run": (["evaluate", "--run", run, "--data", data, "--model-name", "m", "--method",
                                     "scratch", "--width", "1", "--seed", 0, "--out", run / "eval.csv"], run),
        "tables onto an evaluation": (["tables", "--evals", evals, "--out-dir", tmp], evals),
        "hypotheses onto an evaluation": (["hypotheses", "--evals", evals, "--out-csv", evals, "--out-md",
                                           tmp / "h.md", "--out-html", tmp / "h.html"], evals),
        "figures into the data": (["figures", "--data", data, "--models", f"teacher={run}", "--out-dir", data],
                                  data),
        "figures into a run": (["figures", "--data", data, "--models", f"teacher={run}", "--out-dir", run / "f"],
                               run),
        "context inside the data": (["context", "--data", data, "--runs", "[]", "--out", data / "c.csv"], data),
    }


COMMANDS = ["extract into the zip's folder", "extract onto the zip", "prepare onto the source",
            "prepare into the source's parent", "split inside the source", "split onto the split file",
            "train onto the data", "train work folder holding the data", "teacher-cache inside the data",
            "evaluate inside the run", "tables onto an evaluation", "hypotheses onto an evaluation",
            "figures into the data", "figures into a run", "context inside the data"]


@pytest.mark.parametrize("case", COMMANDS)
def test_an_output_over_an_input_is_refused_and_the_input_survives(case, tmp_path, capsys):
    raw = write_rawdata(tmp_path / "src" / "RawData", n=5, shape=(16, 16, 4))
    argv, victim = _commands(tmp_path, raw)[case]
    before = snapshot(victim)
    code, err = run_cli(capsys, *argv)
    line = one_line_error(err)
    assert code == 1
    assert "the input --" in line and str(victim) in line, line
    assert snapshot(victim) == before, "an input was changed"


def test_an_earlier_output_is_replaced_but_a_foreign_folder_is_not(tmp_path, capsys):
    raw = write_rawdata(tmp_path / "RawData", n=5, shape=(16, 16, 4))
    zip_path = _zip_of(raw, tmp_path / "RawData.zip")
    out = tmp_path / "extracted"
    assert run_cli(capsys, "extract", "--zip", zip_path, "--out", out)[0] == 0
    (out / "RawData" / "Training" / "img" / "img0001.nii.gz").unlink()
    assert run_cli(capsys, "extract", "--zip", zip_path, "--out", out)[0] == 0  # an earlier output: replaced
    assert len(find_raw_cases(out)) == 5
    mine = tmp_path / "my-documents"
    (mine / "thesis.txt").parent.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    for argv in (["extract", "--zip", zip_path, "--out", mine], ["phantom", "--out", mine, "--cases", 3]):
        code, err = run_cli(capsys, *argv)
        assert code == 1 and f"{mine} exists and is not an earlier output of hkd" in one_line_error(err)
        assert (mine / "thesis.txt").read_text() == "years of work"


def test_a_symlink_to_an_input_counts_as_the_input(tmp_path, capsys):
    raw = write_rawdata(tmp_path / "RawData", n=5, shape=(16, 16, 4))
    (tmp_path / "link").symlink_to(raw)
    before = snapshot(raw)
    code, err = run_cli(capsys, "split", "--source", raw, "--out", tmp_path / "link" / "s.json")
    assert code == 1 and "lies inside the input --source" in one_line_error(err)
    assert snapshot(raw) == before


# --- rows 2-5: geometry and values checked where the data enters ------------------------------------

def test_infinite_voxels_are_rejected_naming_file_and_value(rawdata):
    path = rawdata / "Training" / "img" / "img0001.nii.gz"
    image, _ = make_case(seed=1)
    image = image.astype(np.float32)
    image[3, 3, 3], image[4, 4, 4] = np.inf, -np.inf
    write_nifti(path, image)
    with pytest.raises(DataError, match=r"img0001.nii.gz: contains NaN or infinite voxels \(2 voxels: -inf, inf\)"):
        load_raw_case(find_raw_cases(rawdata)[0])


def _patch_header(path: Path, pixdim=None, codes=None) -> None:
    """Rewrite header fields of an uncompressed .nii as another tool might have written them."""
    data = bytearray(path.read_bytes())
    if pixdim is not None:
        data[80:92] = np.asarray(pixdim, "<f4").tobytes()  # pixdim[1:4] (pixdim starts at byte 76)
    if codes is not None:
        data[252:256] = np.asarray(codes, "<i2").tobytes()  # qform_code, sform_code
    path.write_bytes(bytes(data))


def _replace_case(rawdata: Path, number: str, affine=LPS_AFFINE, suffix=".nii") -> tuple[Path, Path]:
    for sub in ("img", "label"):
        for old in (rawdata / "Training" / sub).glob(f"{sub}{number}.nii*"):
            old.unlink()
    image, label = make_case(seed=3)
    img = rawdata / "Training" / "img" / f"img{number}{suffix}"
    lab = rawdata / "Training" / "label" / f"label{number}{suffix}"
    for path, arr in ((img, image), (lab, label)):
        hdr = nib.Nifti1Header()
        hdr.set_data_dtype(arr.dtype)
        nib.save(nib.Nifti1Image(arr, affine, hdr), path)
    return img, lab


def test_zero_length_voxel_axis_is_one_line_in_split_and_prepare(rawdata, tmp_path, capsys):
    img, lab = _replace_case(rawdata, "0003")
    # an sform with a zero-length x axis and no qform, as some converters write it
    zero_x = np.diag([0.0, 0.8, 3.0, 1.0])
    for path in (img, lab):
        loaded = nib.load(path, mmap=False)
        hdr, arr = loaded.header.copy(), np.asanyarray(loaded.dataobj).copy()
        hdr.set_sform(zero_x, code=1)
        hdr.set_qform(None, code=0)
        nib.save(nib.Nifti1Image(arr, None, hdr), path)
    with pytest.raises(DataError, match=r"img0003.nii: affine has a zero-length voxel axis \(i"):
        load_raw_case(find_raw_cases(rawdata)[2])
    code, err = run_cli(capsys, "split", "--source", rawdata, "--out", tmp_path / "split.json")
    assert code == 1 and "img0003.nii: affine has a zero-length voxel axis" in one_line_error(err)
    assert not (tmp_path / "split.json").exists()
    split = tmp_path / "s.json"
    split.write_text(json.dumps({"train": ["0001", "0003"], "val": ["0002"], "test": ["0004"]}))
    prep = {"image_size": 16, "hu_window": [-125, 275], "classes": ["background", "liver"],
            "label_map": {"0": 0, "6": 1}}
    code, err = run_cli(capsys, "prepare", "--source", rawdata, "--split", split, "--params", json.dumps(prep),
                        "--out", tmp_path / "prep", "--quiet")
    assert code == 1 and "img0003.nii: affine has a zero-length voxel axis" in one_line_error(err)
    assert not (tmp_path / "prep").exists()


def test_zero_pixdim_without_qform_or_sform_is_rejected_not_taken_as_1mm(rawdata):
    img, lab = _replace_case(rawdata, "0003")
    for path in (img, lab):
        _patch_header(path, pixdim=[0.0, 0.8, 3.0], codes=[0, 0])
    assert nib.load(img).header.get_zooms()[0] == 1.0  # what nibabel alone would have used
    with pytest.raises(DataError, match=r"img0003.nii: voxel spacing \(pixdim\) \[0.0, 0.8.*\] is zero"):
        load_raw_case(find_raw_cases(rawdata)[2])


def test_pixdim_is_enough_without_qform_or_sform(rawdata):
    img, lab = _replace_case(rawdata, "0003")
    for path in (img, lab):
        _patch_header(path, pixdim=[0.8, 0.8, 3.0], codes=[0, 0])
    case = load_raw_case(find_raw_cases(rawdata)[2])
    assert case.spacing == pytest.approx((3.0, 0.8, 0.8))


@pytest.mark.parametrize("other", ["img3.nii.gz", "img0003.nii"])
def test_duplicate_case_ids_are_rejected_naming_both_files(rawdata, other):
    src_img = rawdata / "Training" / "img" / "img0003.nii.gz"
    src_lab = rawdata / "Training" / "label" / "label0003.nii.gz"
    suffix = other[other.index("."):]
    number = other[len("img"):other.index(".")]
    image, label = nib.load(src_img), nib.load(src_lab)
    nib.save(image, rawdata / "Training" / "img" / other)
    nib.save(label, rawdata / "Training" / "label" / f"label{number}{suffix}")
    with pytest.raises(DataError, match="case 0003 is also stored as"):
        find_raw_cases(rawdata)


def test_orphan_labels_are_named_in_a_warning(rawdata, caplog):
    (rawdata / "Training" / "img" / "img0004.nii.gz").unlink()
    with caplog.at_level(logging.WARNING, logger="hkd.data.readers.rawdata"):
        cases = find_raw_cases(rawdata)
    assert [c.case_id for c in cases] == ["0001", "0002", "0003", "0005"]
    assert "label0004.nii.gz" in caplog.text


# --- row 6: foreign checkpoints ---------------------------------------------------------------------

@pytest.mark.parametrize("payload, reason", [({"foo": torch.zeros(2)}, "no 'spec'"),
                                             (torch.zeros(3), "a Tensor"),
                                             ({"spec": "[1]", "model": {}}, "'spec' is not a JSON model spec")])
def test_a_foreign_checkpoint_is_named_not_a_traceback(payload, reason, tmp_path, capsys, prepared):
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match=f"foreign.pt: not an hkd checkpoint .*{reason}"):
        load_model(path)
    code, err = run_cli(capsys, "teacher-cache", "--teacher", path, "--data", prepared, "--method", "logits",
                        "--out", tmp_path / "cache.h5")
    assert code == 1 and "foreign.pt: not an hkd checkpoint" in one_line_error(err)
    assert not (tmp_path / "cache.h5").exists()


def test_a_foreign_resume_state_is_ignored_and_training_starts_afresh(prepared, tmp_path, caplog):
    from hkd.guard import mark_own

    work = tmp_path / "work"
    work.mkdir()
    mark_own(work)  # hkd's work folder (an unmarked one is refused: tests/test_train_outputs.py)
    torch.save(torch.zeros(3), work / "state.pt")
    cfg = {"model": {"arch": "squeezeunet", "width": 0.25}, "epochs": 1, "batch_size": 8, "device": "cpu"}
    with caplog.at_level(logging.WARNING):
        metrics = train(cfg, prepared, tmp_path / "out", resume_dir=work, progress=False)
    assert metrics["status"] == "completed" and "state.pt: not an hkd checkpoint" in caplog.text
    assert load_model(tmp_path / "out" / "best.pt")[1]["arch"] == "squeezeunet"


# --- row 11: an empty evaluation is an error --------------------------------------------------------

def test_evaluating_an_empty_part_is_an_error_and_writes_nothing(prepared, tmp_path, capsys):
    data = tmp_path / "prep"
    shutil.copytree(prepared, data)
    meta = json.loads((data / "dataset.json").read_text())
    meta["split"]["test"] = []
    (data / "dataset.json").write_text(json.dumps(meta))
    run = tmp_path / "run"
    cfg = {"model": {"arch": "squeezeunet", "width": 0.25}, "epochs": 1, "batch_size": 8, "device": "cpu"}
    train(cfg, prepared, run, progress=False)
    code, err = run_cli(capsys, "evaluate", "--run", run, "--data", data, "--model-name", "m", "--method",
                        "scratch", "--width", "0.25", "--seed", 0, "--out", tmp_path / "eval.csv")
    assert code == 1 and "the 'test' part has no cases" in one_line_error(err)
    assert not (tmp_path / "eval.csv").exists()


# --- row 13: split ratios and case counts -----------------------------------------------------------

def test_two_cases_with_default_ratios_name_the_ratios_and_count(tmp_path, capsys):
    raw = write_rawdata(tmp_path / "RawData", n=2, shape=(16, 16, 4))
    with pytest.raises(DataError, match="data.split.ratios: 0.6/0.2/0.2 of 2 cases leave the 'val' part empty"):
        make_split(["0001", "0002"], "random", (0.6, 0.2, 0.2))
    code, err = run_cli(capsys, "split", "--source", raw, "--out", tmp_path / "split.json")
    assert code == 1 and "0.6/0.2/0.2 of 2 cases leave the 'val' part empty" in one_line_error(err)


def test_case_counts_for_the_dry_run_come_from_file_names(tmp_path):
    from hkd.data.readers import count_cases

    raw = write_rawdata(tmp_path / "RawData", n=2, shape=(16, 16, 4))
    assert count_cases(raw, "folder") == 2
    assert count_cases(_zip_of(raw, tmp_path / "RawData.zip"), "zip") == 2
    assert count_cases(tmp_path / "not-downloaded-yet.zip", "zip") is None
    tu = tmp_path / "tu"
    (tu / "train_npz").mkdir(parents=True)
    (tu / "test_vol_h5").mkdir()
    for name in ("case0005_slice000.npz", "case0005_slice001.npz", "case0006_slice000.npz"):
        (tu / "train_npz" / name).write_bytes(b"")  # names only: no file is read
    (tu / "test_vol_h5" / "case0001.npy.h5").write_bytes(b"")
    assert count_cases(tu, "transunet") == 3


def test_a_zero_ratio_leaves_its_part_empty_whatever_the_count():
    ids = [f"{i:04d}" for i in range(1, 31)]
    with pytest.raises(DataError, match="0.8/0/0.2 of 30 cases leave the 'val' part empty"):
        make_split(ids, "random", (0.8, 0.0, 0.2))


# --- CLI errors: one line naming the argument or key ------------------------------------------------

@pytest.mark.parametrize("params, message", [
    ('{"epochs": 1}', "--params: missing key(s) ['model']"),
    ('{"model": {"arch": "squeezeunet"}, "method": "foo"}', "--params: unknown method 'foo'; available: at,"),
    ('{"model": {"arch": "squeezeunet"}, "epoch": 1}', "--params: unknown key(s) ['epoch']"),
    ('{"model": ', "--params: not valid JSON"),
    ("missing.json", "--params: cannot read missing.json"),
])
def test_train_params_errors_name_the_argument_and_key(params, message, tmp_path, capsys, prepared):
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", params, "--out", tmp_path / "run")
    assert code == 1 and message in one_line_error(err)
    assert not (tmp_path / "run").exists()


def test_bad_json_in_other_arguments_is_named(tmp_path, capsys, prepared):
    code, err = run_cli(capsys, "teacher-cache", "--teacher", tmp_path / "t.pt", "--data", prepared,
                        "--method", "logits", "--options", "{temperature: 2}", "--out", tmp_path / "c.h5")
    assert code == 1 and "--options: not valid JSON" in one_line_error(err)
    code, err = run_cli(capsys, "teacher-cache", "--teacher", tmp_path / "t.pt", "--data", prepared,
                        "--method", "telepathy", "--out", tmp_path / "c.h5")
    assert code == 1 and "--method: unknown method 'telepathy'; available:" in one_line_error(err)
    code, err = run_cli(capsys, "figures", "--data", prepared, "--models", "teacher", "--out-dir", tmp_path / "f")
    assert code == 1 and "--models: expected NAME=RUN_FOLDER" in one_line_error(err)


def test_help_has_no_markup_and_figures_does_not_claim_the_context_table(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "hkd" in text
    with pytest.raises(SystemExit):
        main(["figures", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Grad-CAM context table is 'hkd context'" in text
    assert "and the Grad-CAM context table" not in text


# --- row 10: downloads end, clean up and never print the token -------------------------------------

TOKEN = "syn-secret-token-0123456789"


@pytest.fixture
def fake_synapse(monkeypatch, tmp_path):
    """A stand-in synapseclient module whose ``get`` runs ``behaviour(staging)``; the network probe passes."""
    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in synapse._PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: types.SimpleNamespace(close=lambda: None))
    module = types.ModuleType("synapseclient")
    module.__spec__ = importlib.machinery.ModuleSpec("synapseclient", None)
    calls = {}

    class Synapse:
        def __init__(self, **kwargs):
            pass

        def login(self, **kwargs):
            pass

        def get(self, entity, downloadLocation, ifcollision):
            calls["staging"] = Path(downloadLocation)
            return calls["behaviour"](Path(downloadLocation))

    module.Synapse = Synapse
    monkeypatch.setitem(sys.modules, "synapseclient", module)
    return calls


def _staging_left(out: Path) -> list[str]:
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_download_succeeds_and_checks_md5(fake_synapse, tmp_path):
    def write(staging):
        (staging / "RawData.zip").write_bytes(b"zip bytes")
        return types.SimpleNamespace(path=str(staging / "RawData.zip"))

    fake_synapse["behaviour"] = write
    out = tmp_path / "dl" / "RawData.zip"
    assert synapse.download("syn1", out) == out and out.read_bytes() == b"zip bytes"
    out.unlink()
    with pytest.raises(DataError, match="does not match the configured data.md5"):
        synapse.download("syn1", out, expected_md5="0" * 32)
    assert not out.exists() and _staging_left(out) == []


def test_download_ends_at_the_time_limit_and_removes_staging(fake_synapse, tmp_path, capsys):
    def hang(staging):
        (staging / "partial.zip").write_bytes(b"half")
        while True:  # a client retrying forever, swallowing ordinary exceptions
            try:
                time.sleep(0.05)
            except Exception:
                pass

    fake_synapse["behaviour"] = hang
    out = tmp_path / "dl" / "RawData.zip"
    start = time.monotonic()
    code, err = run_cli(capsys, "download", "--entity", "syn1", "--out", out, "--timeout", 0.5)
    assert time.monotonic() - start < 10
    assert code == 1 and "no result after 0.5 s" in one_line_error(err)
    assert not out.exists() and _staging_left(out) == []


def test_no_network_says_cannot_reach_synapse_at_once(monkeypatch, fake_synapse, tmp_path, capsys):
    def refuse(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "create_connection", refuse)
    fake_synapse["behaviour"] = lambda staging: pytest.fail("the client must not be used without a network")
    out = tmp_path / "dl" / "RawData.zip"
    code, err = run_cli(capsys, "download", "--out", out)
    assert code == 1 and "cannot reach Synapse (repo-prod.prod.sagebase.org:443" in one_line_error(err)
    assert _staging_left(out) == []


def test_a_connection_error_inside_the_client_says_cannot_reach_and_hides_the_token(fake_synapse, tmp_path):
    def fail(staging):
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as exc:
            raise RuntimeError(f"request with Authorization: Bearer {TOKEN} failed") from exc

    fake_synapse["behaviour"] = fail
    out = tmp_path / "dl" / "RawData.zip"
    with pytest.raises(DataError) as err:
        synapse.download("syn1", out)
    assert "cannot reach Synapse while downloading syn1" in str(err.value)
    assert TOKEN not in str(err.value) and "Bearer ***" in str(err.value)
    assert _staging_left(out) == []


@pytest.mark.parametrize("how", ["KeyboardInterrupt", "SIGTERM"])
def test_an_interrupted_download_removes_its_staging_folder(how, fake_synapse, tmp_path):
    def interrupted(staging):
        (staging / "partial.zip").write_bytes(b"half")
        if how == "SIGTERM":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        raise KeyboardInterrupt

    fake_synapse["behaviour"] = interrupted
    out = tmp_path / "dl" / "RawData.zip"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        synapse.download("syn1", out)
    assert fake_synapse["staging"].parent == out.parent and _staging_left(out) == [] and not out.exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is only in place during the download


def test_missing_synapseclient_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", TOKEN)
    monkeypatch.setitem(sys.modules, "synapseclient", None)  # as if not installed
    monkeypatch.setattr(synapse.importlib.util, "find_spec", lambda name: None)
    code, err = run_cli(capsys, "download", "--out", tmp_path / "RawData.zip")
    assert code == 1 and "pip install 'hkd[synapse]'" in one_line_error(err)
    assert TOKEN not in err


# --- row 9: one writer per output folder ------------------------------------------------------------

def test_lock_refuses_a_live_holder_naming_pid_and_host(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                      "cwd": "/elsewhere"}))
        with pytest.raises(LockError, match=f"process {holder.pid} on host {socket.gethostname()} "
                                            r"\(working directory /elsewhere"):
            OutLock(tmp_path).acquire()
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "other-node"}))
        with pytest.raises(LockError, match=f"process 1 on host other-node.*delete {tmp_path / LOCK_NAME}"):
            OutLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_with_a_message_and_removed_on_release(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    lock = OutLock(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hkd.lock"):
        lock.acquire()
    assert f"taking over the lock of process {dead.pid}" in caplog.text
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    second = subprocess.run([sys.executable, "-c", f"from hkd.lock import OutLock; OutLock({str(tmp_path)!r}).acquire()"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert second.returncode != 0 and f"LockError: {tmp_path} is in use by process {os.getpid()}" in second.stderr
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


# --- rows 7-9, 12: the workflow (dry runs and tiny real runs) ---------------------------------------

TINY_DATA = {"phantom": {"cases": 3, "size": 32, "slices": [4, 5]}, "image_size": 16}


def snakemake(tmp_path: Path, patch: dict, *args) -> subprocess.CompletedProcess:
    """Snakemake on the real workflow with config.yaml patched by ``patch``, outputs under tmp_path."""
    cfg = _merge(yaml.safe_load((REPO / "config.yaml").read_text()), {"out": str(tmp_path / "out"), **patch})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return helpers.snakemake(REPO, "--configfile", str(path), "--cores", "1", *args, directory=tmp_path)


def planned(result: subprocess.CompletedProcess) -> set[str]:
    """The rules a dry run plans."""
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return set()
    table = text.split("Job stats:", 1)[1]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) not in ("total", "all")}


def ran(result: subprocess.CompletedProcess) -> bool:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return True


@pytest.mark.slow
@pytest.mark.parametrize("patch, message", [
    ({"teacher": {"cache": ["logits", "telepathy"]}, "students": {"train": {"augment": "none"}}},
     "config key teacher.cache: unknown method(s) ['telepathy']"),
    ({"distill": {"telepathy": {}}}, "config key distill: unknown method(s) ['telepathy']"),
    ({"distill": {"logits": {"temprature": 2}}}, "config key distill.logits: unknown option(s) ['temprature']"),
    ({"data": {"split": {"ratios": [0.8, 0.0, 0.2]}}}, "config key data.split.ratios: 0.8/0/0.2 leave the 'val'"),
    ({"data": {"split": {"preset": "file", "file": "/no/such/split.json"}}},
     "config key data.split.file: /no/such/split.json does not exist"),
])
def test_config_mistakes_fail_the_dry_run(patch, message, tmp_path):
    result = snakemake(tmp_path, patch, "-n")
    assert result.returncode != 0 and message in result.stderr + result.stdout, result.stderr[-2000:]


@pytest.mark.slow
def test_a_two_case_folder_fails_the_dry_run_naming_ratios_and_count(tmp_path):
    raw = write_rawdata(tmp_path / "RawData", n=2, shape=(16, 16, 4))
    result = snakemake(tmp_path, {"data": {"source": "folder", "path": str(raw)}}, "-n")
    assert result.returncode != 0
    assert "config key data.split.ratios: 0.6/0.2/0.2 of 2 cases leave the 'val' part empty" in (
        result.stdout + result.stderr)


@pytest.mark.slow
def test_a_schema_violation_is_short_and_names_key_and_rule(tmp_path):
    result = snakemake(tmp_path, {}, "-n", "--config", "bogus=1")
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "config key bogus: unknown key" in text
    assert len(text.splitlines()) < 10, text
    result = snakemake(tmp_path, {"data": {"image_size": 20}}, "-n")
    text = result.stdout + result.stderr
    assert "config key data.image_size: 20 is not a multiple of 16 (schema rule 'multipleOf')" in text
    assert len(text.splitlines()) < 10, text


@pytest.mark.slow
def test_the_split_file_is_an_input(tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["0001"], "val": ["0002"], "test": ["0003"]}))
    patch = {"data": {**TINY_DATA, "split": {"preset": "file", "file": str(split)}}}
    target = str(tmp_path / "out" / "data" / "split.json")
    assert ran(snakemake(tmp_path, patch, target))
    assert json.loads(Path(target).read_text())["val"] == ["0002"]
    assert planned(snakemake(tmp_path, patch, target, "-n")) == set()
    time.sleep(1)
    split.write_text(json.dumps({"train": ["0002"], "val": ["0001"], "test": ["0003"]}))
    assert planned(snakemake(tmp_path, patch, target, "-n")) == {"split"}


@pytest.mark.slow
def test_a_folder_source_reruns_prepare_when_a_file_changes_or_appears(tmp_path):
    raw = write_rawdata(tmp_path / "RawData", n=5, shape=(16, 16, 4))
    patch = {"data": {"source": "folder", "path": str(raw), "image_size": 16}}
    target = str(tmp_path / "out" / "data" / "prepared")
    assert ran(snakemake(tmp_path, patch, target))
    assert planned(snakemake(tmp_path, patch, target, "-n")) == set()
    time.sleep(1)
    label = raw / "Training" / "label" / "label0002.nii.gz"
    img = nib.load(label)
    fixed = np.asanyarray(img.dataobj).copy()
    assert fixed[0, 0, 0] == 0
    fixed[0, 0, 0] = 6
    nib.save(nib.Nifti1Image(fixed, img.affine), label)  # a label fixed in place
    assert {"split", "prepare"} <= planned(snakemake(tmp_path, patch, target, "-n"))
    assert ran(snakemake(tmp_path, patch, target))
    image, label = make_case((16, 16, 4), seed=6)
    write_nifti(raw / "Training" / "img" / "img0006.nii.gz", image)
    write_nifti(raw / "Training" / "label" / "label0006.nii.gz", label)  # a new case
    assert {"split", "prepare"} <= planned(snakemake(tmp_path, patch, target, "-n"))


@pytest.mark.slow
def test_the_workflow_takes_the_out_lock_and_a_dry_run_does_not(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    target = str(out / "raw" / "phantom")
    try:
        (out / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                 "cwd": "/another/workdir"}))
        result = snakemake(tmp_path, {"data": TINY_DATA}, target)
        assert result.returncode != 0
        assert f"process {holder.pid} on host {socket.gethostname()}" in result.stdout + result.stderr
        assert not Path(target).exists()
        assert planned(snakemake(tmp_path, {"data": TINY_DATA}, target, "-n")) == {"phantom"}
    finally:
        holder.kill()
        holder.wait()
    result = snakemake(tmp_path, {"data": TINY_DATA}, target)  # the holder is gone: taken over
    assert ran(result) and f"taking over the lock of process {holder.pid}" in result.stdout + result.stderr
    assert Path(target).is_dir() and not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------ KiTS19 download (local files and server)

def _kits19_server_files(root: Path, cases: int = 2) -> tuple[str, str]:
    """A local stand-in for the KiTS19 imaging server and label repository: file:// URL templates."""
    for case in range(cases):
        image, label = make_case(seed=case)
        write_nifti(root / "imaging" / f"master_{case:05d}.nii.gz", image)
        write_nifti(root / "labels" / f"case_{case:05d}" / "segmentation.nii.gz", label)
    return (f"file://{root}/imaging/master_{{case:05d}}.nii.gz",
            f"file://{root}/labels/case_{{case:05d}}/segmentation.nii.gz")


def test_kits19_download_writes_the_official_layout_read_by_the_kits19_reader(tmp_path, capsys):
    imaging, labels = _kits19_server_files(tmp_path / "server")
    out = tmp_path / "dl" / "data"
    code, err = run_cli(capsys, "download", "--source", "kits19", "--cases", 2, "--imaging-url", imaging,
                        "--labels-url", labels, "--out", out)
    assert code == 0, err
    from hkd.data.readers import list_cases

    assert list_cases(out, "kits19") == {"00000": 8, "00001": 8}
    assert (out / "case_00001" / "imaging.nii.gz").read_bytes() == (
        tmp_path / "server" / "imaging" / "master_00001.nii.gz").read_bytes()


def test_a_failed_kits19_download_names_the_url_and_leaves_nothing(tmp_path, capsys):
    imaging, labels = _kits19_server_files(tmp_path / "server", cases=1)
    out = tmp_path / "dl" / "data"
    code, err = run_cli(capsys, "download", "--source", "kits19", "--cases", 2, "--imaging-url", imaging,
                        "--labels-url", labels, "--out", out)
    assert code == 1 and "case_00001/segmentation.nii.gz" in one_line_error(err)
    assert list((tmp_path / "dl").iterdir()) == []  # neither the folder nor its staging copy
    (tmp_path / "page.html").write_text("<html>not found</html>")
    code, err = run_cli(capsys, "download", "--source", "kits19", "--cases", 1, "--imaging-url",
                        f"file://{tmp_path}/page.html", "--labels-url", labels, "--out", out)
    assert code == 1 and "page.html is not a gzip-compressed NIfTI file" in one_line_error(err)
    code, err = run_cli(capsys, "download", "--source", "kits19", "--cases", 1, "--imaging-url",
                        "http://127.0.0.1:9/master_{case:05d}.nii.gz", "--labels-url", labels, "--out", out)
    assert code == 1 and "cannot reach 127.0.0.1:9" in one_line_error(err)
    assert list((tmp_path / "dl").iterdir()) == []


def test_kits19_download_ends_at_the_time_limit_and_removes_staging(tmp_path, capsys):
    import http.server
    import threading

    class Stalling(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # a server that answers the headers, then sends the body too slowly
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            try:
                for _ in range(100):
                    time.sleep(0.1)
                    self.wfile.write(b"\x1f\x8b" + b"0" * 100)
            except OSError:  # the client gave up
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{{case}}.nii.gz"
    out = tmp_path / "dl" / "data"
    start = time.monotonic()
    try:
        code, err = run_cli(capsys, "download", "--source", "kits19", "--cases", 3, "--imaging-url", url,
                            "--labels-url", url, "--out", out, "--timeout", 0.5)
    finally:
        server.shutdown()
    assert time.monotonic() - start < 5
    assert code == 1 and "KiTS19 download: no result after 0.5 s" in one_line_error(err)
    assert list((tmp_path / "dl").iterdir()) == []


@pytest.mark.parametrize("fmt", ["kits19", "lits"])
def test_a_corrupt_kits19_or_lits_label_is_one_line_naming_the_file(fmt, tmp_path, capsys):
    from hkd.cli import build_parser
    from hkd.data.phantom import write_phantom_dataset
    from hkd.data.sources import FORMATS

    split = build_parser(["split"])._subparsers._group_actions[0].choices["split"]
    assert set(split._option_string_actions["--format"].choices) == set(FORMATS)  # the CLI offers every reader
    root = tmp_path / fmt
    write_phantom_dataset(root, n_cases=3, seed=0, size=32, slices=(4, 5), layout=fmt, tumours={})
    code, err = run_cli(capsys, "split", "--source", root, "--format", fmt, "--ratios", 0.34, 0.33, 0.33,
                        "--out", tmp_path / "split.json")
    assert code == 0, err
    label = root / ("case_00001/segmentation.nii.gz" if fmt == "kits19" else "segmentation-1.nii")
    label.write_bytes(b"not a nifti header at all" * 20)
    params = json.dumps({"image_size": 16, "hu_window": [-40, 160], "label_map": {"0": 0, "1": 1, "2": 2},
                         "classes": ["background", "organ", "tumour"], "task": "organ+tumour", "scale": [-1, 1]})
    code, err = run_cli(capsys, "prepare", "--source", root, "--format", fmt, "--split", tmp_path / "split.json",
                        "--params", params, "--out", tmp_path / "prep", "--quiet")
    assert code == 1 and f"{label}: not a readable NIfTI" in one_line_error(err)
    assert not (tmp_path / "prep").exists()
