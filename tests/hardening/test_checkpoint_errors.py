"""Checkpoints hkd did not write, or cannot read, are named in one line; a full disk while writing one keeps
the last good checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from cli_errors import one_line_error, run_cli
from conftest import REPO, TINY_TEACHER

from hkd import record
from hkd.models.checkpoint import load_model
from hkd.train.trainer import train

SMALL = {"model": {"arch": "squeezeunet", "width": 0.25}, "epochs": 1, "batch_size": 8, "device": "cpu"}


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


def test_a_foreign_resume_state_is_ignored_and_training_starts_afresh(prepared, tmp_path, caplog):
    from hkd import record

    work = tmp_path / "work"
    work.mkdir()
    torch.save(torch.zeros(3), work / "state.pt")
    record.add(work / "state.pt")  # hkd's (an unrecorded one is refused: tests/hardening/test_train_outputs.py)
    cfg = {"model": {"arch": "squeezeunet", "width": 0.25}, "epochs": 1, "batch_size": 8, "device": "cpu"}
    with caplog.at_level(logging.WARNING):
        metrics = train(cfg, prepared, tmp_path / "out", resume_dir=work, progress=False)
    assert metrics["status"] == "completed" and "state.pt: not an hkd checkpoint" in caplog.text
    assert load_model(tmp_path / "out" / "best.pt")[1]["arch"] == "squeezeunet"


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
    record.add(good)  # hkd's checkpoint
    before = good.read_bytes()
    result = subprocess.run([sys.executable, "-c", lib, "20000", str(good)], capture_output=True, text=True, env=env)
    assert result.returncode != 0 and f"NoSpaceError: no space left while writing {good} (its earlier content is kept)" \
        in result.stderr, result.stderr[-2000:]
    assert good.read_bytes() == before and [p.name for p in tmp_path.iterdir() if p.name.startswith(".last")] == []
