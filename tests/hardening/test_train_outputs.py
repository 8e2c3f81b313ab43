"""``hkd train`` never destroys or mixes up what it did not write, and trains on bounded numbers: its work
folder is never the output, it replaces in its folders only the files hkd recorded writing (a user's files
there are kept, whatever their names), one run holds each folder at a time, what a killed write left behind is swept by the next run of that
job, and a method normalising by a spread keeps its gradient bounded when the student's spread vanishes.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hkd.record import RECORD
from hkd.lock import LOCK_NAME, LockError, OutLock
from hkd.models.checkpoint import load_model

from conftest import REPO
from cli_errors import one_line_error, run_cli, snapshot

SMALL = {"model": {"arch": "squeezeunet", "width": 0.25}, "epochs": 1, "batch_size": 8, "device": "cpu",
         "method": "scratch"}


def train_cli(capsys, prepared, out, work=None, params=SMALL) -> tuple[int, str]:
    extra = ["--work", work] if work else []
    return run_cli(capsys, "train", "--data", prepared, "--params", json.dumps(params), "--out", out, *extra,
                   "--quiet")


def _user_folder(folder: Path, files: dict[str, object]) -> dict[str, bytes]:
    folder.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, str):
            (folder / name).write_text(content)
        else:
            torch.save(content, folder / name)
    return snapshot(folder)


# --- the work folder: hkd's own, never the output, never a user's -----------------------------------------

def test_a_work_folder_of_the_users_keeps_their_files_and_itself(prepared, tmp_path, capsys):
    """A folder that existed before stays the user's: hkd writes and removes its own files there, nothing else."""
    work = tmp_path / "u"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", json.dumps(SMALL),
                        "--out", tmp_path / "run1", "--work", work, "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in work.iterdir()) == ["thesis.tex"]  # hkd's files and its record of them gone
    assert (work / "thesis.tex").read_text() == "years of work"
    assert load_model(tmp_path / "run1" / "best.pt")[1]["arch"] == "squeezeunet"


def test_a_work_folder_that_is_or_contains_the_output_is_refused(prepared, tmp_path, capsys):
    run2 = tmp_path / "run2"
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", json.dumps(SMALL),
                        "--out", run2, "--work", run2, "--quiet")
    line = one_line_error(err)
    assert code == 1 and f"--work {run2} is --out {run2}" in line, line
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", json.dumps(SMALL),
                        "--out", run2 / "inner", "--work", run2, "--quiet")
    assert code == 1 and "contains --out" in one_line_error(err)


def test_the_work_folder_hkd_made_is_removed_after_training_and_a_users_file_kept(prepared, tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "run"
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", json.dumps(SMALL),
                        "--out", out, "--work", work, "--quiet")
    assert code == 0, err
    assert not work.exists() and load_model(out / "best.pt")[1]["arch"] == "squeezeunet"
    # a file hkd did not record is never hkd's, whatever its name and form (the tests below)
    work.mkdir()
    torch.save(torch.zeros(2), work / "state.pt")
    assert run_cli(capsys, "train", "--data", prepared, "--params", json.dumps(SMALL), "--out", out,
                   "--work", work, "--quiet")[0] == 1
    assert torch.equal(torch.load(work / "state.pt"), torch.zeros(2))


# --- a file hkd did not record is never hkd's ---------------------------------------------------------------

@pytest.mark.parametrize("files", [{"state.pt": "text"}, {"best.pt": "text"},
                                   {"state.pt": {"model": torch.zeros(2)}, "best.pt": {"w": torch.ones(1)}}],
                         ids=["text state.pt", "text best.pt", "torch files"])
def test_a_work_folder_holding_files_named_as_hkds_is_refused_and_kept(files, prepared, tmp_path, capsys):
    work = tmp_path / "u"
    before = _user_folder(work, files)
    code, err = train_cli(capsys, prepared, tmp_path / "o", work)
    line = one_line_error(err)
    name = sorted(files)[-1]  # the first of the run's work files (state.pt, best.pt) found there
    assert code == 1 and f"--work {work} holds {name}, which hkd may not replace: hkd did not write it" in line, line
    assert "move it away, or choose a new or empty folder (nothing was written)" in line, line
    assert snapshot(work) == before and not (tmp_path / "o").exists()


@pytest.mark.parametrize("files", [{"best.pt": "my notes"},
                                   {"best.pt": {"model": torch.ones(3)}, "log.csv": "epoch,loss\n1,0.5\n"}],
                         ids=["text best.pt", "torch best.pt and a csv with an epoch column"])
def test_an_out_folder_holding_files_hkd_did_not_write_is_refused_and_kept(files, prepared, tmp_path, capsys):
    out = tmp_path / "o"
    before = _user_folder(out, files)
    code, err = train_cli(capsys, prepared, out)
    line = one_line_error(err)
    assert code == 1 and f"--out {out} holds " in line and "which hkd may not replace: hkd did not write it" in line, line
    assert snapshot(out) == before


def test_a_run_reruns_over_the_files_it_recorded_and_refuses_one_the_user_edited(prepared, tmp_path, capsys):
    out, work = tmp_path / "o", tmp_path / "w"
    out.mkdir()  # the user's folder: it stays theirs, hkd records the files it writes in it
    assert train_cli(capsys, prepared, out, work)[0] == 0
    assert not work.exists()
    first = (out / "metrics.json").read_text()
    assert train_cli(capsys, prepared, out, work)[0] == 0  # the files it recorded: rerun in place
    assert json.loads((out / "metrics.json").read_text())["val_dice"] == json.loads(first)["val_dice"]
    assert sorted(p.name for p in out.iterdir()) == sorted([RECORD, "best.pt", "last.pt", "log.csv", "metrics.json"])
    with open(out / "log.csv", "a") as f:  # the user's edit: the file is theirs now
        f.write("# checked by hand\n")
    before = snapshot(out)
    code, err = train_cli(capsys, prepared, out, work)
    line = one_line_error(err)
    assert code == 1 and f"--out {out} holds log.csv, which hkd may not replace: it was changed since hkd wrote it" \
        in line, line
    assert snapshot(out) == before


# --- one run per folder ------------------------------------------------------------------------------------

@pytest.fixture
def live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("flag", ["--out", "--work"])
def test_a_folder_another_run_holds_is_refused_and_left_alone(flag, live_process, prepared, tmp_path, capsys):
    out, work = tmp_path / "o", tmp_path / "w"
    held = out if flag == "--out" else work
    held.mkdir()
    (held / LOCK_NAME).write_text(json.dumps({"pid": live_process.pid, "host": socket.gethostname()}))
    before = snapshot(held)
    code, err = train_cli(capsys, prepared, out, work)
    line = one_line_error(err)
    assert code == 1 and f"{held} is in use by process {live_process.pid} on host" in line, line
    assert f"delete {held / LOCK_NAME}" in line, line
    assert snapshot(held) == before
    assert not (out / "best.pt").exists() and not (work / "state.pt").exists()


def test_a_run_holds_its_folders_while_it_trains_and_frees_them_at_the_end(prepared, tmp_path):
    from hkd.train.config import TrainConfig
    from hkd.train.trainer import Run

    out, work = tmp_path / "o", tmp_path / "w"
    run = Run(TrainConfig.from_dict(SMALL), prepared, out, work, None, progress=False)
    steps = run.steps()
    next(steps)
    for folder in (out, work):
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    other = subprocess.run([sys.executable, "-c", f"from hkd.lock import OutLock; OutLock({str(out)!r}).acquire()"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert other.returncode != 0 and f"{out} is in use by process {os.getpid()}" in other.stderr
    for _ in steps:
        pass
    assert not (out / LOCK_NAME).exists() and not work.exists()


def test_a_terminated_run_releases_its_folders(prepared, tmp_path):
    """SIGTERM (a cluster's time limit) interrupts a run like Ctrl-C: its locks go, the next run proceeds."""
    import signal
    import time

    out, work = tmp_path / "o", tmp_path / "w"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    params = json.dumps({**SMALL, "epochs": 50})
    proc = subprocess.Popen([sys.executable, "-m", "hkd.cli", "train", "--data", str(prepared), "--params", params,
                             "--out", str(out), "--work", str(work), "--quiet"], env=env, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    while not (work / LOCK_NAME).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and "hkd train: interrupted" in err, err
    assert not (out / LOCK_NAME).exists() and not (work / LOCK_NAME).exists()


@pytest.mark.parametrize("content", ["", '{"pid": 12', '{"pid": -1, "host": "h"}'],
                         ids=["empty", "truncated", "pid -1"])
def test_an_unreadable_lock_file_is_named_with_how_to_clear_it(content, tmp_path):
    (tmp_path / LOCK_NAME).write_text(content)
    with pytest.raises(LockError) as err:
        OutLock(tmp_path).acquire(wait_incomplete=0.1)
    message = str(err.value)
    assert f"lock file {tmp_path / LOCK_NAME} is empty or unreadable" in message, message
    assert f"if no run is using {tmp_path}, delete {tmp_path / LOCK_NAME}" in message, message
    assert "process -1" not in message
    (tmp_path / LOCK_NAME).unlink()  # as the message says: then the folder is free
    lock = OutLock(tmp_path)
    lock.acquire()
    lock.release()


def test_train_names_an_empty_lock_file_in_its_out_folder(prepared, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / LOCK_NAME).write_text("")
    code, err = train_cli(capsys, prepared, out)
    line = one_line_error(err)
    assert code == 1 and f"delete {out / LOCK_NAME}" in line and "process -1" not in line, line


# --- killed writes ------------------------------------------------------------------------------------------

def killed_write(path: Path, content: bytes) -> None:
    """``path`` as a temporary that a write of hkd train recorded before its process was killed."""
    from hkd import record

    pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                             text=True).stdout)  # a process that is gone
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    with record.updating(path.parent, created=True) as rec:
        rec["writing"][path.name] = {"pid": pid, "host": socket.gethostname(), "kind": "file", "by": "hkd train"}


def test_temporaries_of_a_killed_checkpoint_write_are_swept_by_the_next_run(prepared, tmp_path, capsys):
    out, work = tmp_path / "o", tmp_path / "w"
    killed_write(work / ".state.pt.k1ll3d_0.pt", b"PK\x03\x04 half a checkpoint")
    killed_write(work / ".best.pt.a8c2x9q1.pt", b"PK")
    killed_write(out / ".last.pt.0123abcd.pt", b"PK")
    killed_write(out / ".metrics.json.zzzzzzzz.json", b"{")
    # the user's files, named as hkd's temporaries are or not: not recorded, so never hkd's
    mine = {out / ".best.pt.notes.txt": "mine", out / "best.pt.draft": "mine too", out / ".log.csv.abcd1234.csv": "x"}
    for path, text in mine.items():
        path.write_text(text)
    for _ in range(2):  # the job runs again later: nothing is left to stop it
        code, err = train_cli(capsys, prepared, out, work)
        assert code == 0, err
        assert not work.exists()
        assert not (out / ".last.pt.0123abcd.pt").exists() and not (out / ".metrics.json.zzzzzzzz.json").exists()
    assert all(path.read_text() == text for path, text in mine.items())


# --- a folder that cannot be written is found before training ------------------------------------------------

def _read_only_cli(folder: Path) -> list[str]:
    """The command prefix under which ``folder`` cannot be written: none for a user (the folder is made
    read-only), for root (who writes anywhere) a private mount namespace where ``folder`` is mounted read-only."""
    os.chmod(folder, 0o555)
    if os.geteuid() != 0:
        return []
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro {folder} {folder}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"root cannot make a read-only folder here: {probe.stderr.strip()}")
    return ["unshare", "-m", "sh", "-c", f'mount --bind -o ro {folder} {folder} && exec "$@"', "sh"]


def test_a_read_only_out_is_named_before_training(prepared, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    prefix = _read_only_cli(out)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([*prefix, sys.executable, "-m", "hkd.cli", "train", "--data", str(prepared), "--params",
                             json.dumps(SMALL), "--out", str(out), "--quiet"],
                            capture_output=True, text=True, env=env, timeout=120)
    os.chmod(out, 0o755)
    line = one_line_error(result.stderr)
    assert result.returncode == 1 and f"--out {out}: cannot write there" in line, line
    assert "epoch" not in result.stderr and list(out.iterdir()) == []


# --- numerics: flat student outputs ---------------------------------------------------------------------------

def _grad_norm(value, params) -> float:
    grads = torch.autograd.grad(value, params, allow_unused=True)
    return float(torch.sqrt(sum(g.double().pow(2).sum() for g in grads if g is not None)))


def test_dist_keeps_the_gradient_modest_when_the_students_outputs_are_flat(one_thread):
    from hkd import distill
    from hkd.models import build_model
    from hkd.models.base import Feature

    torch.manual_seed(0)
    student = build_model({"arch": "squeezeunet", "width": 0.25, "num_classes": 9})
    x = torch.randn(4, 1, 32, 32)
    teacher = {"logits": 3 * torch.randn(4, 9, 32, 32)}  # a trained teacher's spread over the classes
    specs = {"logits": Feature(9, 32, 32, 1.0, 0.5)}
    method = distill.build("dist", specs, specs, 9)
    params = list(student.parameters())
    normal = _grad_norm(sum(method(teacher, {"logits": student(x)}, None).values()), params)
    with torch.no_grad():  # a zeroed head: every class scores the same at every pixel
        student.head.weight.zero_()
        student.head.bias.fill_(0.3)
    flat = _grad_norm(sum(method(teacher, {"logits": student(x)}, None).values()), params)
    assert math.isfinite(flat) and flat < 20 * normal, (flat, normal)


def test_cka_keeps_the_gradient_bounded_when_a_student_map_is_flat():
    from hkd import distill
    from hkd.models.base import Feature

    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(4, 16, 8, 8, generator=gen)
    specs = {"bottleneck": Feature(16, 8, 8, 4.0, 2.0)}
    method = distill.build("cka", specs, {"bottleneck": Feature(8, 8, 8, 4.0, 2.0)}, 9, layers=["bottleneck"])
    norms = {}
    for spread in (1.0, 1e-2, 1e-4, 1e-6):
        student = (0.7 + spread * torch.randn(4, 8, 8, 8, generator=gen)).requires_grad_()
        term = method({"bottleneck": teacher}, {"bottleneck": student}, None)["cka"]
        norms[spread] = _grad_norm(term, [student])
    assert all(math.isfinite(n) for n in norms.values()) and max(norms.values()) < 200 * norms[1.0], norms
