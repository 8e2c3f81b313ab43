"""GPU lock files: a lock file that is a symbolic link, or a lock folder of another user, is refused naming it;
the default lock folder is the user's own and private.
"""

from __future__ import annotations

import json
import os

import pytest
from cli_errors import one_line_error, run_cli

SMALL = {"model": {"arch": "squeezeunet", "width": 0.25}, "epochs": 1, "batch_size": 8, "device": "cpu"}


def _train_on_two_gpus(prepared, tmp_path, capsys, monkeypatch, locks):
    """``hkd train`` with ``device: auto``, two visible GPUs and lock folder ``locks``: (exit code, error line)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", json.dumps({**SMALL, "device": "auto"}),
                        "--out", tmp_path / "run", "--gpu-locks", locks, "--quiet")
    return code, one_line_error(err)


def test_a_gpu_lock_file_that_is_a_symlink_is_refused_and_its_target_kept(prepared, tmp_path, capsys, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "gpu-0.lock").symlink_to(victim)
    code, line = _train_on_two_gpus(prepared, tmp_path, capsys, monkeypatch, locks)
    assert code == 1 and f"GPU lock file {locks / 'gpu-0.lock'} is a symbolic link" in line, line
    assert victim.read_text() == "precious" and not (tmp_path / "run").exists()


def test_the_default_gpu_lock_folder_is_per_user_and_private(monkeypatch, tmp_path):
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
def test_another_users_gpu_lock_folder_is_named(prepared, tmp_path, capsys, monkeypatch):
    locks = tmp_path / "theirs"
    locks.mkdir()
    os.chown(locks, 4242, 4242)
    code, line = _train_on_two_gpus(prepared, tmp_path, capsys, monkeypatch, locks)
    assert code == 1 and f"GPU lock folder {locks} belongs to another user (uid 4242)" in line, line
    assert list(locks.iterdir()) == []
