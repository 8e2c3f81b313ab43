"""One writer per output folder: a live holder of the lock is named, a dead one's lock is taken over, and the
workflow takes the lock of its out folder (a dry run does not).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from patched_workflow import TINY_DATA, planned, ran, snakemake_patched

from hkd.lock import LOCK_NAME, LockError, OutLock


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


@pytest.mark.slow
def test_the_workflow_takes_the_out_lock_and_a_dry_run_does_not(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    target = str(out / "raw" / "phantom")
    try:
        (out / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                 "cwd": "/another/workdir"}))
        result = snakemake_patched(tmp_path, {"data": TINY_DATA}, target)
        assert result.returncode != 0
        assert f"process {holder.pid} on host {socket.gethostname()}" in result.stdout + result.stderr
        assert not Path(target).exists()
        assert planned(snakemake_patched(tmp_path, {"data": TINY_DATA}, target, "-n")) == {"phantom"}
    finally:
        holder.kill()
        holder.wait()
    result = snakemake_patched(tmp_path, {"data": TINY_DATA}, target)  # the holder is gone: taken over
    assert ran(result) and f"taking over the lock of process {holder.pid}" in result.stdout + result.stderr
    assert Path(target).is_dir() and not (out / LOCK_NAME).exists()
