"""Live training curves (hkd.train.tracking): TensorBoard events and an MLflow store, read with each tool's
own reader, hold every epoch once, also after a kill and resume; tracking changes no number."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from hkd import record
from hkd.models.checkpoint import load_state
from hkd.train.config import TrainConfig
from hkd.train.trainer import Run, train
from hkd.train.tracking import TENSORBOARD_DIR, open_tracker, scalars

from helpers import TINY_STUDENT

EPOCHS = 3
TRACKERS = ["tensorboard", "mlflow"]
NAME = "scratch_w0.25_s3"


def _cfg(**kw):
    return {"model": TINY_STUDENT, "epochs": EPOCHS, "batch_size": 8, "device": "cpu", "seed": 3, **kw}


def _tensorboard(folder) -> dict[str, list[int]]:
    """Steps of every scalar tag, as TensorBoard's own reader loads the run's event folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _mlflow(store):
    """The study's runs in the MLflow store and, per run, the steps of every metric (MLflow's client)."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    experiments = client.search_experiments()
    assert [e.name for e in experiments if e.name != "Default"] == [store.resolve().parent.name]
    runs = client.search_runs([e.experiment_id for e in experiments])
    steps = {r.info.run_name: {k: [m.step for m in client.get_metric_history(r.info.run_id, k)]
                               for k in r.data.metrics} for r in runs}
    return client, runs, steps


def _steps(kind, run_dir, store):
    if kind == "tensorboard":
        return _tensorboard(run_dir / TENSORBOARD_DIR)
    _, runs, steps = _mlflow(store)
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return steps[NAME]


def _numbers(out):
    return pd.read_csv(out / "log.csv").drop(columns=["seconds"]), json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def untracked(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("untracked")
    train(_cfg(), prepared, out, progress=False)
    return out


@pytest.mark.parametrize("kind", TRACKERS)
def test_every_epoch_once_after_a_resume_from_an_older_state(kind, prepared, tmp_path, untracked):
    """The run stops after epoch 2 was logged, but resumes from the state of epoch 1 (a kill between the
    tracker's write and the state's): epochs 2 and 3 are trained again and logged once. The numbers are
    those of a run without a tracker."""
    pytest.importorskip({"tensorboard": "tensorboard", "mlflow": "mlflow"}[kind])
    out, work, store = tmp_path / "study" / "models" / "run", tmp_path / "work", tmp_path / "study" / "mlruns"
    cfg = _cfg()

    def run():
        tracker = open_tracker(kind, out, NAME, cfg, store=store, tags={"method": "scratch"})
        return Run(TrainConfig.from_dict(cfg), prepared, out, work, None, progress=False, tracker=tracker)

    steps, older = run().steps(), tmp_path / "state_epoch1.pt"
    for _ in steps:
        epoch = load_state(work / "state.pt")["epoch"] if (work / "state.pt").exists() else 0
        if epoch == 1 and not older.exists():
            shutil.copyfile(work / "state.pt", older)
        if epoch == 2:
            break  # epoch 2 trained, saved and logged; the run is left there, as a kill would
    steps.close()
    shutil.copyfile(older, work / "state.pt")
    record.add(work / "state.pt")  # as hkd wrote it at epoch 1
    run().fit()

    found = _steps(kind, out, store)
    row = pd.read_csv(out / "log.csv").iloc[0].to_dict()
    assert set(found) == set(scalars(row)), set(found) ^ set(scalars(row))
    assert {"loss/total", "loss/ce", "loss/dice", "lr", "val/dice", "val_dice/spleen"} <= set(found)
    assert all(s == list(range(1, EPOCHS + 1)) for s in found.values()), found
    log_tracked, m_tracked = _numbers(out)
    log_plain, m_plain = _numbers(untracked)
    pd.testing.assert_frame_equal(log_tracked, log_plain)
    assert {k: m_tracked[k] for k in ("val_dice", "val_iou", "best_epoch")} == \
        {k: m_plain[k] for k in ("val_dice", "val_iou", "best_epoch")}


def test_mlflow_run_holds_the_config_tags_and_metrics_json(prepared, tmp_path):
    pytest.importorskip("mlflow")
    out, store = tmp_path / "study" / "models" / "run", tmp_path / "study" / "mlruns"
    cfg = _cfg(epochs=1)
    full = vars(TrainConfig.from_dict(cfg))
    train(cfg, prepared, out, progress=False,
          tracker=open_tracker("mlflow", out, NAME, full, store=store, tags={"method": "scratch", "seed": 3}))
    client, runs, steps = _mlflow(store)
    (run,) = runs
    assert run.info.run_name == NAME and run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.01" and run.data.params["optimizer"] == "sgd"  # defaults included
    assert run.data.params["model.arch"] == "squeezeunet" and run.data.params["model.width"] == "0.25"
    assert run.data.tags["method"] == "scratch" and run.data.tags["status"] == "completed"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["metrics.json"]
    assert all(s == [1] for s in steps[NAME].values())

    # the same run started afresh (a rerun) replaces the earlier one instead of adding a second
    train(cfg, prepared, out, progress=False, tracker=open_tracker("mlflow", out, NAME, cfg, store=store))
    assert len(_mlflow(store)[1]) == 1


def _row(epoch):
    """A ``log.csv`` row as the trainer writes one."""
    return {"epoch": epoch, "loss": 1.0 / epoch, "ce": 0.6 / epoch, "dice": 0.4 / epoch, "lr": 0.01,
            "val_dice": 0.1 * epoch, "val_iou": 0.05 * epoch, "val_dice_spleen": 0.1 * epoch, "seconds": 0.5}


def _metric_files(store):
    return sorted(p for p in store.rglob("metrics/**/*") if p.is_file())


def test_mlflow_resume_drops_the_append_a_kill_cut_short(tmp_path):
    """A kill mid-append leaves MLflow's file store with an empty metric file and a cut line (MLflow itself
    then fails on every read of the run); the resumed run drops both and holds each epoch once, with the
    values logged."""
    pytest.importorskip("mlflow")
    store = tmp_path / "study" / "mlruns"
    first = open_tracker("mlflow", tmp_path, NAME, {"seed": 3}, store=store)
    first.start([])
    first.epoch(_row(1))
    files = _metric_files(store)
    assert len(files) == len(scalars(_row(1)))
    files[0].write_text(files[0].read_text() + "1765000000000 0.5")  # epoch 2's line cut by the kill
    files[1].unlink()
    files[1].touch()  # created, killed before its first line
    resumed = open_tracker("mlflow", tmp_path, NAME, {"seed": 3}, store=store)
    resumed.start([_row(1)])
    resumed.epoch(_row(2))
    _, runs, steps = _mlflow(store)
    assert len(runs) == 1 and runs[0].info.run_id == first.run_id
    assert steps[NAME] == {tag: [1, 2] for tag in scalars(_row(1))}
    history = {m.step: m.value for m in _mlflow(store)[0].get_metric_history(first.run_id, "loss/total")}
    assert history == {1: 1.0, 2: 0.5}


def test_mlflow_run_starts_while_another_job_appends_to_the_store(tmp_path):
    """Jobs of one study share the MLflow store: a run starting while another job's metric file is being
    appended to (empty for an instant) neither fails nor touches the other run."""
    pytest.importorskip("mlflow")
    store = tmp_path / "study" / "mlruns"
    other = open_tracker("mlflow", tmp_path, "scratch_w0.5_s0", {"seed": 0}, store=store)
    other.start([])
    other.epoch(_row(1))
    appending = _metric_files(store)[0]
    appending.write_text("")
    for history in ([], [_row(1)]):  # afresh, then as a resumed job
        mine = open_tracker("mlflow", tmp_path, NAME, {"seed": 3}, store=store)
        mine.start(history)
        mine.epoch(_row(2))
    assert appending.read_text() == ""


@pytest.mark.slow
@pytest.mark.parametrize("kind", TRACKERS)
def test_killed_training_job_logs_every_epoch_once(kind, prepared, tmp_path):
    """`hkd train --tracker` killed with SIGKILL after its first epoch, then run again: TensorBoard's and
    MLflow's readers find epochs 1 to 3 once each."""
    pytest.importorskip({"tensorboard": "tensorboard", "mlflow": "mlflow"}[kind])
    out, work, store = tmp_path / "study" / "models" / "run", tmp_path / "work", tmp_path / "study" / "mlruns"
    cmd = [sys.executable, "-m", "hkd.cli", "train", "--data", str(prepared), "--params",
           json.dumps(_cfg(batch_size=4)), "--quiet", "--threads", "1", "--out", str(out), "--work", str(work),
           "--tracker", kind, "--tracking-store", str(store), "--run-name", NAME]
    proc = subprocess.Popen(cmd)
    deadline = time.time() + 120
    while not (work / "state.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists(), "the run finished before it could be killed"
    subprocess.run(cmd, check=True)
    found = _steps(kind, out, store)
    assert found and all(s == list(range(1, EPOCHS + 1)) for s in found.values()), found


def test_missing_mlflow_extra_is_one_line_naming_the_install(monkeypatch, tmp_path):
    """MLflow is the one tracker outside the plain install (TensorBoard, the default's, is in it)."""
    from hkd.train.tracking import check_installed

    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    line = (r"^train.tracker: mlflow needs the mlflow-skinny package, which is not installed: "
            r"pip install 'hkd\[mlflow\]' \(or set train.tracker: none\)$")
    with pytest.raises(ImportError, match=line):
        open_tracker("mlflow", tmp_path, NAME, {})
    assert not (tmp_path / "mlruns").exists()  # nothing written
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ImportError, match=line):
        check_installed("mlflow")
    check_installed("tensorboard")
    with pytest.raises(ValueError, match="unknown tracker 'wandb'"):
        open_tracker("wandb", tmp_path, NAME, {})


def test_each_epoch_logs_one_line_with_losses_dice_seconds_and_time_left(prepared, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="hkd.train.trainer"):
        train(_cfg(epochs=2), prepared, tmp_path, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2, lines
    for line, left in zip(lines, ("about", "about 0 s left")):
        assert "loss" in line and "ce " in line and "dice " in line and "val Dice" in line and "spleen" in line, line
        assert left in line and " s, about " in line, line


def test_gradient_ratios_are_those_of_the_gradient_balance_module():
    from hkd.train.gradient_balance import block_ratios
    from hkd.train.tracking import grad_ratios

    row = {"epoch": 1, "gradnorm_seg": 2.0, "gradnorm_seg@enc1": 1.0, "gradnorm_seg@dec1": 0.0, "gradnorm_kd": 4.0,
           "gradnorm_kd@enc1": 3.0, "gradnorm_kd@dec1": 0.0, "gradnorm_kd@adapter.p": 5.0, "gradnorm_at": 1.0,
           "gradnorm_at@enc1": 0.5}
    expected = block_ratios(pd.DataFrame([row])).dropna()
    assert grad_ratios(row) == {f"grad_ratio/{r.term}/{r.block}": r.ratio for r in expected.itertuples()}
    assert grad_ratios(row)["grad_ratio/kd/enc1"] == 3.0
