"""The command line never destroys what it did not write; bad input is refused before any work.

One test per row of the second bad-input audit (D1-D9 and the messages), each reproducing the row as a
user would meet it and asserting the one line the user sees and that nothing was destroyed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from hkd.models.checkpoint import load_model
from hkd.train.trainer import train

from conftest import REPO, TINY_TEACHER
from test_hardening import _patch_header, _replace_case, one_line_error, run_cli, snapshot, snakemake

SMALL = {"model": {"arch": "squeezeunet", "width": 0.25}, "epochs": 1, "batch_size": 8, "device": "cpu"}


# --- D1: the trainer's work folder ------------------------------------------------------------------

def test_d1_a_work_folder_holding_user_files_is_refused_and_kept(prepared, tmp_path, capsys):
    work = tmp_path / "u"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", json.dumps(SMALL),
                        "--out", tmp_path / "run1", "--work", work, "--quiet")
    line = one_line_error(err)
    assert code == 1 and f"--work {work} holds files hkd did not write (thesis.tex)" in line, line
    assert (work / "thesis.tex").read_text() == "years of work"
    assert not (tmp_path / "run1").exists()


def test_d1_a_work_folder_that_is_the_output_is_refused(prepared, tmp_path, capsys):
    run2 = tmp_path / "run2"
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", json.dumps(SMALL),
                        "--out", run2, "--work", run2, "--quiet")
    line = one_line_error(err)
    assert code == 1 and f"--work {run2} is --out {run2}" in line, line
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", json.dumps(SMALL),
                        "--out", run2 / "inner", "--work", run2, "--quiet")
    assert code == 1 and "contains --out" in one_line_error(err)


def test_d1_the_work_folder_is_hkds_and_removed_but_nothing_else(prepared, tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "run"
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", json.dumps(SMALL),
                        "--out", out, "--work", work, "--quiet")
    assert code == 0, err
    assert not work.exists() and load_model(out / "best.pt")[1]["arch"] == "squeezeunet"
    # an unmarked folder is never hkd's, whatever its files' names and forms (tests/test_train_outputs.py)
    work.mkdir()
    torch.save(torch.zeros(2), work / "state.pt")
    assert run_cli(capsys, "train", "--data", prepared, "--params", json.dumps(SMALL), "--out", out,
                   "--work", work, "--quiet")[0] == 1
    assert torch.equal(torch.load(work / "state.pt"), torch.zeros(2))


# --- D2: GPU lock files -----------------------------------------------------------------------------

def _train_on_two_gpus(prepared, tmp_path, capsys, monkeypatch, locks):
    """``hkd train`` with ``device: auto``, two visible GPUs and lock folder ``locks``: (exit code, error line)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", json.dumps({**SMALL, "device": "auto"}),
                        "--out", tmp_path / "run", "--gpu-locks", locks, "--quiet")
    return code, one_line_error(err)


def test_d2_a_lock_file_that_is_a_symlink_is_refused_and_its_target_kept(prepared, tmp_path, capsys, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "gpu-0.lock").symlink_to(victim)
    code, line = _train_on_two_gpus(prepared, tmp_path, capsys, monkeypatch, locks)
    assert code == 1 and f"GPU lock file {locks / 'gpu-0.lock'} is a symbolic link" in line, line
    assert victim.read_text() == "precious" and not (tmp_path / "run").exists()


def test_d2_the_default_lock_folder_is_per_user_and_private(monkeypatch, tmp_path):
    from hkd.devices import claim_gpu, default_lock_dir

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile re-reads TMPDIR
    assert default_lock_dir() == tmp_path / f"hkd-gpu-locks-{os.geteuid()}"
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with claim_gpu(None, ["0", "1"]) as device:
        assert device == "0"
        info = os.stat(default_lock_dir())
        assert info.st_uid == os.geteuid() and info.st_mode & 0o077 == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs to give a folder to another user")
def test_d2_another_users_lock_folder_is_named(prepared, tmp_path, capsys, monkeypatch):
    locks = tmp_path / "theirs"
    locks.mkdir()
    os.chown(locks, 4242, 4242)
    code, line = _train_on_two_gpus(prepared, tmp_path, capsys, monkeypatch, locks)
    assert code == 1 and f"GPU lock folder {locks} belongs to another user (uid 4242)" in line, line
    assert list(locks.iterdir()) == []


# --- D3, D4: the lock-step cohort's publish folders and store ---------------------------------------

def test_d3_publishing_into_the_teachers_folder_is_refused(prepared, teacher_ckpt, tmp_path, capsys):
    t = tmp_path / "t"
    t.mkdir()
    (t / "best.pt").write_bytes(teacher_ckpt.read_bytes())
    before = snapshot(t)
    code, err = run_cli(capsys, "train-cohort", "--data", prepared, "--members", json.dumps({"a": SMALL}),
                        "--root", tmp_path / "store", "--teacher", t / "best.pt", "--publish", '{"a": "%s"}' % t,
                        "--manifest", tmp_path / "m.json", "--quiet")
    line = one_line_error(err)
    assert code == 1 and f"--publish 'a' {t} contains the input --teacher {t / 'best.pt'}" in line, line
    assert snapshot(t) == before and not (tmp_path / "m.json").exists()


def test_d4_a_truncated_store_file_is_retrained_and_the_good_copy_published(prepared, tmp_path, capsys):
    store, pub = tmp_path / "store", tmp_path / "pub"
    argv = ["train-cohort", "--data", prepared, "--members", json.dumps({"a": SMALL}), "--root", store,
            "--publish", json.dumps({"a": str(pub)}), "--manifest", tmp_path / "m.json", "--quiet"]
    assert run_cli(capsys, *argv)[0] == 0
    good = (store / "a" / "best.pt").read_bytes()
    weights = load_model(store / "a" / "best.pt")[0].state_dict()
    assert run_cli(capsys, *argv)[0] == 0  # unchanged: kept
    assert json.loads((tmp_path / "m.json").read_text())["members"]["a"]["trained"] is False
    (store / "a" / "best.pt").write_bytes(good[: len(good) // 2])  # truncated, identity.json still there
    code, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert json.loads((tmp_path / "m.json").read_text())["members"]["a"]["trained"] is True
    for path in (store / "a" / "best.pt", pub / "best.pt"):  # retrained and published: the same weights
        again = load_model(path)[0].state_dict()
        assert all(torch.equal(weights[k], again[k]) for k in weights)


# --- D5 and a huge header: geometry refused where the data enters -----------------------------------

def test_d5_zero_spacing_is_refused_whatever_the_header_codes(rawdata, tmp_path, capsys):
    img, lab = _replace_case(rawdata, "0003")
    for path in (img, lab):
        _patch_header(path, pixdim=[0.8, 0.8, 0.0], codes=[1, 0])
    assert nib.load(img).header.get_zooms()[2] == 1.0  # what nibabel alone would have used
    code, err = run_cli(capsys, "split", "--source", rawdata, "--out", tmp_path / "split.json")
    line = one_line_error(err)
    assert code == 1 and f"{img}: voxel spacing (pixdim) [0.8" in line and "qform_code 1" in line, line
    assert not (tmp_path / "split.json").exists()


def test_a_header_declaring_a_huge_volume_is_refused_naming_the_limit(rawdata, tmp_path, capsys):
    img, lab = _replace_case(rawdata, "0002")
    data = bytearray(img.read_bytes())
    data[42:48] = np.asarray([4000, 4000, 4000], "<i2").tobytes()  # dim[1:4]
    img.write_bytes(bytes(data))
    split = tmp_path / "s.json"
    split.write_text(json.dumps({"train": ["0001", "0002"], "val": ["0003"], "test": ["0004"]}))
    prep = {"image_size": 16, "hu_window": [-125, 275], "classes": ["background", "liver"],
            "label_map": {"0": 0, "6": 1}}
    for argv in (["split", "--source", rawdata, "--out", tmp_path / "split.json"],
                 ["prepare", "--source", rawdata, "--split", split, "--params", json.dumps(prep),
                  "--out", tmp_path / "prep", "--quiet"]):
        code, err = run_cli(capsys, *argv)
        line = one_line_error(err)
        assert code == 1 and f"{img}: header declares 4000 x 4000 x 4000 voxels, more than the limit" in line, line
    assert not (tmp_path / "split.json").exists() and not (tmp_path / "prep").exists()


# --- D6-D8: the configuration, checked by the dry run ----------------------------------------------

@pytest.mark.slow
def test_d6_tuple_form_report_slices_pass_the_schema(tmp_path):
    result = snakemake(tmp_path, {"report": {"slices": [["0004", 2]]}}, "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    result = snakemake(tmp_path, {"report": {"slices": [["0004", "two"]]}}, "-n")
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "config key report.slices" in text and "AttributeError" not in text, text


@pytest.mark.slow
@pytest.mark.parametrize("out", ["", "  "])
def test_d7_an_empty_out_fails_the_dry_run(out, tmp_path):
    result = snakemake(tmp_path, {"out": out}, "-n")
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "config key out: " in text and "/data/split.json" not in text, text[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("patch, message", [
    ({"students": {"methods": ["scratch", "logits"]}, "distill": {"logits": {"temperature": -1}}},
     "config key distill.logits.temperature: distillation method 'logits': option 'temperature' must be positive, "
     "got -1"),
    ({"students": {"widths": ["0"]}}, "config key students.widths ('0'): SqueezeUNet width multiplier must be "
                                      "positive"),
    ({"teacher": {"model": {"arch": "transunet", "hidden_size": 100, "num_heads": 3}}},
     "config key teacher.model: hidden size 100 is not divisible by 3 heads"),
    ({"train": {"schedule": "cosine", "lr": 0.001, "min_lr": 0.01}},
     "config key train or teacher.train: training config: invalid value for min_lr"),
])
def test_d8_method_and_model_options_fail_the_dry_run(patch, message, tmp_path):
    result = snakemake(tmp_path, patch, "-n")
    text = result.stdout + result.stderr
    assert result.returncode != 0 and message in text, text[-2000:]


# --- D9: prepare checks the split it is given --------------------------------------------------------

PREP = {"image_size": 16, "hu_window": [-125, 275], "classes": ["background", "liver"], "label_map": {"0": 0, "6": 1}}


@pytest.mark.parametrize("split, message", [
    ({"train": ["0001", "0002"], "val": [], "test": ["0003"]}, "--split: split: the 'val' part is empty"),
    ({"train": ["0001"], "val": ["0002"], "test": ["0002", "0003"]},
     "--split: split: case 0002 is in both 'val' and 'test'"),
    ({"train": ["0001"], "val": "0002", "test": ["0003"]}, "--split: expected a JSON object with 'train'"),
])
def test_d9_prepare_checks_the_split_as_split_does(split, message, rawdata, tmp_path, capsys):
    for value in (json.dumps(split), tmp_path / "s.json"):
        (tmp_path / "s.json").write_text(json.dumps(split))
        code, err = run_cli(capsys, "prepare", "--source", rawdata, "--split", value, "--params", json.dumps(PREP),
                            "--out", tmp_path / "prep", "--quiet")
        line = one_line_error(err)
        assert code == 1 and message in line, line
        assert not (tmp_path / "prep").exists()


# --- Messages: one line naming the file or argument ---------------------------------------------------

def test_an_evaluation_csv_with_only_its_header_is_named_by_tables_and_hypotheses(tmp_path, capsys):
    from hkd.evaluate.volume import COLUMNS

    evals = tmp_path / "eval.csv"
    evals.write_text(",".join(COLUMNS) + "\n")
    for argv, outs in ((["tables", "--evals", evals, "--out-dir", tmp_path / "tables"], [tmp_path / "tables"]),
                       (["hypotheses", "--evals", evals, "--out-csv", tmp_path / "h.csv", "--out-md", tmp_path / "h.md",
                         "--out-html", tmp_path / "h.html"], [tmp_path / "h.csv", tmp_path / "h.md"])):
        code, err = run_cli(capsys, *argv)
        line = one_line_error(err)
        assert code == 1 and f"{evals}: evaluation CSV without rows (only its header)" in line, line
        assert not any(p.exists() for p in outs)


class _Pickled:  # an object torch.load refuses with weights_only=True
    pass


@pytest.mark.parametrize("kind", ["truncated", "pickled object"])
def test_a_truncated_or_foreign_checkpoint_is_one_line(kind, prepared, teacher_ckpt, tmp_path, capsys):
    path = tmp_path / "t.pt"
    if kind == "truncated":
        data = teacher_ckpt.read_bytes()
        path.write_bytes(data[: len(data) // 3])
        expected = f"{path}: not a readable hkd checkpoint, truncated or not written by torch.save"
    else:
        torch.save({"model": _Pickled()}, path)
        expected = f"{path}: not an hkd checkpoint (it holds Python objects"
    code, err = run_cli(capsys, "teacher-cache", "--teacher", path, "--data", prepared, "--method", "logits",
                        "--out", tmp_path / "cache.h5")
    line = one_line_error(err)
    assert code == 1 and expected in line and "weights_only" not in line, line
    assert not (tmp_path / "cache.h5").exists()


_FSIZE_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.argv = sys.argv[1:]
"""


def test_disk_full_while_writing_a_checkpoint_is_one_line_and_keeps_the_last_good_one(prepared, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    out = tmp_path / "run"
    cli = _FSIZE_LIMITED + "from hkd.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", cli, "20000", "train", "--data", prepared, "--params",
                             json.dumps(SMALL), "--out", out, "--quiet"], capture_output=True, text=True, env=env)
    line = one_line_error(result.stderr)
    assert result.returncode == 1 and f"no space left while writing {out / 'best.pt'}" in line, line
    # over an earlier checkpoint: that one stays as it was
    lib = _FSIZE_LIMITED + ("import torch; from pathlib import Path; from hkd.models.checkpoint import save_state\n"
                            "save_state(Path(sys.argv[1]), {'w': torch.zeros(100000)})")
    good = tmp_path / "last.pt"
    torch.save({"w": torch.ones(3)}, good)
    before = good.read_bytes()
    result = subprocess.run([sys.executable, "-c", lib, "20000", str(good)], capture_output=True, text=True, env=env)
    assert result.returncode != 0 and f"NoSpaceError: no space left while writing {good} (its earlier content is kept)" \
        in result.stderr, result.stderr[-2000:]
    assert good.read_bytes() == before and [p.name for p in tmp_path.iterdir() if p.name.startswith(".last")] == []


@pytest.mark.parametrize("source", ["synapse", "kits19"])
@pytest.mark.parametrize("timeout", ["-1", "0", "nan"])
def test_a_download_timeout_that_is_not_positive_is_named(source, timeout, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", "unused")
    code, err = run_cli(capsys, "download", "--source", source, "--out", tmp_path / "dl", "--timeout", timeout)
    line = one_line_error(err)
    assert code == 1 and f"--timeout {float(timeout):g}: must be a positive number of seconds" in line, line
    assert list(tmp_path.iterdir()) == []


def test_split_refuses_to_replace_a_file_hkd_did_not_write(rawdata, tmp_path, capsys):
    notes = tmp_path / "user" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("my notes")
    code, err = run_cli(capsys, "split", "--source", rawdata, "--out", notes)
    line = one_line_error(err)
    assert code == 1 and f"{notes} exists and is not a file hkd wrote" in line, line
    assert notes.read_text() == "my notes"
    mine = tmp_path / "user" / "package.json"
    mine.write_text('{"name": "mine"}')
    assert run_cli(capsys, "split", "--source", rawdata, "--out", mine)[0] == 1 and mine.read_text() == '{"name": "mine"}'
    split = tmp_path / "split.json"  # hkd's own split is replaced on a rerun
    assert run_cli(capsys, "split", "--source", rawdata, "--out", split)[0] == 0
    assert run_cli(capsys, "split", "--source", rawdata, "--out", split, "--seed", 1)[0] == 0
    assert json.loads(split.read_text())["seed"] == 1


def test_a_student_checkpoint_as_teacher_is_compared_with_the_configured_teacher(prepared, tmp_path, capsys):
    student = tmp_path / "student"
    train(SMALL, prepared, student, progress=False)
    params = {**SMALL, "method": "logits", "teacher": TINY_TEACHER}
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", json.dumps(params), "--out", tmp_path / "run",
                        "--teacher", student / "best.pt", "--quiet")
    line = one_line_error(err)
    assert code == 1 and f"--teacher {student / 'best.pt'}: holds a squeezeunet model (arch 'squeezeunet'" in line
    assert "but the configured teacher has arch 'transunet'" in line, line
    assert not (tmp_path / "run").exists()


def test_stale_temporaries_of_a_killed_prepare_are_removed_on_the_next_run(rawdata, tmp_path, capsys):
    from hkd.io import PARTIAL_MARKER

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        temps = {}
        for name, pid in (("killed", dead.pid), ("running", alive.pid)):
            temps[name] = tmp_path / f".prep.{name}"
            (temps[name] / "volumes").mkdir(parents=True)
            (temps[name] / PARTIAL_MARKER).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
        temps["user"] = tmp_path / ".prep.mine"  # not hkd's: never touched
        temps["user"].mkdir()
        split = tmp_path / "s.json"
        split.write_text(json.dumps({"train": ["0001", "0002"], "val": ["0003"], "test": ["0004"]}))
        code, err = run_cli(capsys, "prepare", "--source", rawdata, "--split", split, "--params", json.dumps(PREP),
                            "--out", tmp_path / "prep", "--quiet")
        assert code == 0, err
        assert not temps["killed"].exists() and temps["running"].exists() and temps["user"].exists()
        assert (tmp_path / "prep" / "dataset.json").exists()
    finally:
        alive.kill()
        alive.wait()
