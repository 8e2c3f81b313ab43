"""The record of what hkd wrote (``hkd/record.py``): what it lists is what is on disk, a kill at any point of a
replacement leaves a file hkd knows, an edit makes a file the user's, and concurrent writers keep each
other's entries."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hkd import record
from hkd.guard import check_replaceable
from hkd.io import write_text

from conftest import REPO


def test_the_recorded_fingerprint_is_the_files_own(tmp_path):
    write_text(tmp_path / "a.txt", "one\n")
    entry = record.entry_of(tmp_path / "a.txt")
    assert entry["sha256"] == record.sha256(tmp_path / "a.txt") and entry["size"] == 4
    assert entry["mtime_ns"] == os.stat(tmp_path / "a.txt").st_mtime_ns and not record.read(tmp_path)["writing"]


def test_a_file_saved_again_unchanged_stays_hkds_and_an_edit_of_the_same_size_does_not(tmp_path):
    path = tmp_path / "a.txt"
    write_text(path, "abc\n")
    os.utime(path, ns=(1, 1))  # saved again by an editor, same bytes: only the time differs
    assert record.why_not_hkds(path) is None
    path.write_text("abd\n")  # the same size, other bytes
    assert record.why_not_hkds(path) == "it was changed since hkd wrote it"


@pytest.mark.parametrize("first", [False, True], ids=["a replacement", "the first write"])
@pytest.mark.parametrize("killed", ["before the rename", "after the rename"])
def test_a_kill_during_a_write_leaves_a_file_hkd_knows(killed, first, tmp_path, monkeypatch):
    path = tmp_path / "state.txt"
    if not first:
        write_text(path, "epoch 1\n")
    writes = []
    real_write, real_replace = record._write, os.replace

    def write_then_die(folder, rec):  # the write after the rename never happens (1: the temporary, 2: before it)
        writes.append(1)
        if len(writes) == 3:
            raise KeyboardInterrupt
        real_write(folder, rec)

    def die(*args):
        raise KeyboardInterrupt

    if killed == "before the rename":
        monkeypatch.setattr(os, "replace", lambda a, b: die() if str(b) == str(path) else real_replace(a, b))
    else:
        monkeypatch.setattr(record, "_write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_text(path, "epoch 2\n")
    monkeypatch.undo()
    if killed == "before the rename":
        assert path.read_text() == "epoch 1\n" if not first else not path.exists()
    else:
        assert path.read_text() == "epoch 2\n"
    check_replaceable(path)  # hkd's (or absent) either way: the next run replaces it
    write_text(path, "epoch 3\n")
    assert "previous" not in record.entry_of(path)


WRITER = """
import sys
from hkd.io import write_text
for i in range(int(sys.argv[2])):
    write_text(f"{sys.argv[1]}/{sys.argv[3]}{i}.txt", str(i))
"""


def test_concurrent_writers_in_one_folder_keep_each_others_entries(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "25", prefix], env=env)
             for prefix in ("a", "b", "c")]
    assert all(p.wait() == 0 for p in procs)
    rec = record.read(tmp_path)
    assert set(rec["files"]) == {f"{p}{i}.txt" for p in "abc" for i in range(25)} and not rec["writing"]
    assert all(record.why_not_hkds(tmp_path / name) is None for name in rec["files"])


def test_a_temporary_is_recorded_before_it_exists_and_a_killed_writers_entry_goes(tmp_path, monkeypatch):
    seen = []
    real_open = os.open

    def watching_open(path, flags, *args):  # the temporary's creation: its name is in the record already
        if Path(path).name.startswith(".a.txt."):
            seen.append(Path(path).name in record.read(tmp_path)["writing"])
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", watching_open)
    write_text(tmp_path / "a.txt", "x")
    monkeypatch.undo()
    assert seen and all(seen)
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    with record.updating(tmp_path) as rec:  # killed after recording its temporary, before creating it
        rec["writing"][".b.txt.0123abcd.txt"] = {"pid": gone, "host": socket.gethostname(), "kind": "file"}
    write_text(tmp_path / "c.txt", "y")
    assert record.read(tmp_path)["writing"] == {}
