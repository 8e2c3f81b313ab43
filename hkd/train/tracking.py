"""Live training curves in an experiment tracker: TensorBoard event files or a local MLflow store.

A tracker only reads a run's epoch rows (the rows of ``log.csv``) and writes them to local files, so it
changes no number of the run. Every value is logged with the epoch as its step:

- ``loss/total`` and ``loss/<term>`` (each term at the weight it trained with), ``lr``;
- ``val/dice``, ``val/iou`` and ``val_dice/<class>``;
- ``grad_ratio/<term>/<block>``: a distillation term's gradient norm over the segmentation loss's, over
  the whole student (block ``model``) and per block (:mod:`hkd.train.gradient_balance`);
- ``time/epoch_seconds``.

TensorBoard: one event folder per run, ``<run folder>/tensorboard``, so ``tensorboard --logdir
<study>/models`` lists the runs by their folders (method, width, seed). MLflow: one experiment per study
in a file store (``<study>/mlruns``), one MLflow run per training run, named as the workflow names it,
with the training config as parameters, the metrics per epoch and ``metrics.json`` as an artefact.

A run resumed after a kill logs every epoch once: the TensorBoard folder is rewritten from the epochs
the resumed state holds (events of later epochs, logged before the kill, go with it); the MLflow run
is found again by its name (the store records each name's run id), an append the kill cut short is
dropped, and only the (metric, epoch) pairs it lacks are logged. A run started
afresh replaces what an earlier run of the same folder or name logged. Nothing is sent anywhere:
MLflow's telemetry is switched off before it is imported.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

from hkd import extras, record
from hkd.guard import remove_own
from hkd.io import write_text
from hkd.record import make_folder
from hkd.train import gradient_balance

log = logging.getLogger(__name__)

TRACKERS = ("none", "tensorboard", "mlflow")
TENSORBOARD_DIR = "tensorboard"  # a run's event folder, inside the run's folder
MLFLOW_STORE = "mlruns"  # the study's MLflow file store, inside the study's folder
RUN_TAG = "hkd.run"  # the MLflow tag naming a run as the workflow names it
MLFLOW_NEEDS = "train.tracker: mlflow"  # what needs the mlflow extra (its missing-package line)
NOT_TERMS = {"epoch", "lr", "loss", "seconds", "val_dice", "val_iou"}
PARAM_LENGTH = 6000  # MLflow's longest parameter value


def scalars(row: dict) -> dict[str, float]:
    """The tracked values of one ``log.csv`` row, by tag (see the module's docstring)."""
    out = {"loss/total": row["loss"], "lr": row["lr"], "val/dice": row["val_dice"], "val/iou": row["val_iou"],
           "time/epoch_seconds": row["seconds"]}
    for key, value in row.items():
        if key.startswith("val_dice_"):
            out[f"val_dice/{key[len('val_dice_'):]}"] = value
        elif key not in NOT_TERMS and not key.startswith(("val_", gradient_balance.PREFIX)):
            out[f"loss/{key}"] = value
    out.update(grad_ratios(row))
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def grad_ratios(row: dict) -> dict[str, float]:
    """``grad_ratio/<term>/<block>`` of one row, as :func:`hkd.train.gradient_balance.block_ratios` has them
    (block ``model``: the whole student; a block without a segmentation gradient has none)."""
    col, seg = gradient_balance.column, gradient_balance.SEG
    if col(seg) not in row:
        return {}
    head = col(seg) + gradient_balance.AT
    blocks = ["model"] + [k[len(head):] for k in row
                          if k.startswith(head) and not gradient_balance.is_adapter(k[len(head):])]
    terms = [k[len(gradient_balance.PREFIX):] for k in row
             if k.startswith(gradient_balance.PREFIX) and gradient_balance.AT not in k and k != col(seg)]
    out = {}
    for term in terms:
        for block in blocks:
            b = None if block == "model" else block
            num, den = row.get(col(term, b)), row.get(col(seg, b))
            if num is not None and den is not None and float(den) > 0:
                out[f"grad_ratio/{term}/{block}"] = float(num) / float(den)
    return out


def check_installed(kind: str) -> None:
    """Raise the one-line error of a tracker whose package is not installed (nothing is imported)."""
    if kind == "mlflow":
        extras.check("mlflow", MLFLOW_NEEDS, otherwise="set train.tracker: none")


class Tracker:
    """No tracking: the interface every tracker has (``train.tracker: none``)."""

    def start(self, history: list[dict]) -> None:
        """Called once before the first epoch a process trains, with the epochs a resumed state holds."""

    def epoch(self, row: dict) -> None:
        """One epoch's ``log.csv`` row."""

    def finish(self, metrics: dict, metrics_json: Path) -> None:
        """The run's end: its metrics and where ``metrics.json`` was written."""


class TensorBoardTracker(Tracker):
    """Event files in ``<run folder>/tensorboard`` (torch's SummaryWriter)."""

    def __init__(self, run_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self._writer_class = SummaryWriter
        self.folder = Path(run_dir) / TENSORBOARD_DIR
        self.writer = None

    def start(self, history: list[dict]) -> None:
        make_folder(self.folder)
        before = {p for p in self.folder.iterdir() if p.name not in record.BOOKKEEPING}
        for old in sorted(before):  # an earlier (or killed) run's event files, as hkd recorded them
            if record.why_not_hkds(old) is None:
                remove_own(old)
            else:
                log.warning("%s: kept (not an event file hkd recorded writing); TensorBoard may show its "
                            "curves beside this run's", old)
        # purge_step 1: a TensorBoard watching the folder drops what it read from the deleted files
        self.writer = self._writer_class(str(self.folder), purge_step=1 if history else None, flush_secs=3600)
        self.files = {p for p in self.folder.iterdir() if p.name not in record.BOOKKEEPING} - before
        for row in history:
            self._write(row)
        self.writer.flush()
        self._record()

    def _record(self) -> None:
        """Record the event files as they now are (they grow every epoch)."""
        for path in self.files:
            record.add(path)

    def _write(self, row: dict) -> None:
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=int(row["epoch"]))

    def epoch(self, row: dict) -> None:
        self._write(row)
        self.writer.flush()
        self._record()

    def finish(self, metrics: dict, metrics_json: Path) -> None:
        self.writer.close()
        self._record()


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text[:PARAM_LENGTH]
    return out


class MlflowTracker(Tracker):
    """One MLflow run in the study's experiment of a local file store."""

    def __init__(self, store: str | Path, experiment: str, name: str, config: dict, tags: dict | None = None):
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # nothing leaves the machine
        os.environ["DO_NOT_TRACK"] = "true"
        # MLflow 3 keeps its file store (one folder per run: no database, safe for concurrent jobs and
        # network filesystems) behind this switch
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        tracking = extras.require("mlflow.tracking", MLFLOW_NEEDS, otherwise="set train.tracker: none")
        self.store = Path(store).resolve()
        self.store.mkdir(parents=True, exist_ok=True)
        self.client = tracking.MlflowClient(tracking_uri=self.store.as_uri())
        self.experiment, self.name, self.config, self.tags = experiment, name, config, tags or {}
        self.run_id = None
        self.logged: dict[str, set[int]] = {}  # the epochs each metric has, so none is logged twice

    def _experiment_id(self) -> str:
        """The study's experiment, created once however many jobs start at the same time."""
        lock = self.store / f".{self.experiment}.creating"
        deadline = time.time() + 60
        while True:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                return found.experiment_id
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if time.time() < deadline:
                    time.sleep(0.2)
                    continue
                lock.unlink(missing_ok=True)  # left by a process killed while creating it
                continue
            try:
                os.close(fd)
                return self.client.create_experiment(self.experiment)
            finally:
                lock.unlink(missing_ok=True)

    def _id_file(self, experiment_id: str) -> Path:
        """The file holding the id of this name's MLflow run: a hidden file in the store's top folder,
        whose sub-folders MLflow reads as experiments."""
        return self.store / f".{experiment_id}.{self.name}.run-id"

    def _recorded_run(self, experiment_id: str):
        """The active MLflow run this name logged to before, if its folder is still there, with the append a
        kill cut short dropped (:func:`repair_torn_metrics`). Found by the store's own record, never by
        searching the experiment: a search reads every run's metric files, which concurrent jobs are
        appending to."""
        try:
            run_id = self._id_file(experiment_id).read_text().strip()
        except FileNotFoundError:
            return None
        folder = self.store / experiment_id / run_id
        if not run_id or not folder.is_dir():
            return None
        repair_torn_metrics(folder / "metrics")
        run = self.client.get_run(run_id)
        return run if run.info.lifecycle_stage == "active" else None

    def start(self, history: list[dict]) -> None:
        entities = _entities()
        Param, RunTag = entities.Param, entities.RunTag
        experiment_id = self._experiment_id()
        earlier = self._recorded_run(experiment_id)
        if history and earlier:  # resumed: the run that logged the epochs before the kill
            self.run_id = earlier.info.run_id
            self.logged = {tag: {m.step for m in self.client.get_metric_history(self.run_id, tag)}
                           for tag in earlier.data.metrics}
        else:  # afresh: what an earlier run of this name logged goes
            if earlier:
                self.client.delete_run(earlier.info.run_id)
            run = self.client.create_run(experiment_id, run_name=self.name, tags={RUN_TAG: self.name, **self.tags})
            self.run_id = run.info.run_id
            write_text(self._id_file(experiment_id), self.run_id + "\n", own=False)
            params = [Param(k, v) for k, v in _flatten(self.config).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
                self.client.log_batch(self.run_id, params=params[i:i + 100])
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in self.tags.items()])
        self._log(history)

    def _log(self, rows: list[dict]) -> None:
        """Log the rows' values, leaving out the (metric, epoch) pairs the run has (a resumed run trains
        again the epochs after its state, which may have been logged before the kill)."""
        Metric = _entities().Metric
        now = int(time.time() * 1000)
        metrics = []
        for row in rows:
            step = int(row["epoch"])
            for tag, value in scalars(row).items():
                if step not in self.logged.setdefault(tag, set()):
                    metrics.append(Metric(tag, value, now, step))
                    self.logged[tag].add(step)
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def epoch(self, row: dict) -> None:
        self._log([row])

    def finish(self, metrics: dict, metrics_json: Path) -> None:
        RunTag = _entities().RunTag
        tags = {"status": metrics.get("status"), "converged": metrics.get("converged"),
                "gradient_flags": ", ".join(metrics.get("gradient_flags") or []) or "none"}
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        self.client.log_artifact(self.run_id, str(metrics_json))
        self.client.set_terminated(self.run_id, "FINISHED")


def _entities():
    """MLflow's entity classes (Param, RunTag, Metric)."""
    return extras.require("mlflow.entities", MLFLOW_NEEDS)


def repair_torn_metrics(folder: Path) -> None:
    """Drop the incomplete last line of each metric file of one MLflow run in a file store.

    MLflow's file store appends ``timestamp value step`` lines to one text file per metric, not atomically:
    a process killed mid-append leaves an empty file (every read of the run then fails) or a cut line (read
    as a wrong value at step 0). MLflow has no call that repairs a run, hence this one. Only whole lines
    (three fields, ending in a newline) stay; a file left empty goes."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        text = path.read_text()
        lines = text.splitlines(keepends=True)
        whole = [line for line in lines if line.endswith("\n") and len(line.split()) == 3]
        if not whole:
            path.unlink()
        elif len(whole) < len(lines):
            write_text(path, "".join(whole), own=False)


def open_tracker(kind: str, run_dir: str | Path, name: str, config: dict, store: str | Path | None = None,
                 experiment: str | None = None, tags: dict | None = None) -> Tracker:
    """The tracker of one run in ``run_dir``: ``kind`` is none, tensorboard or mlflow. MLflow's ``store``
    defaults to ``<run_dir>/mlruns`` and ``experiment`` to the name of the store's parent folder."""
    if kind == "none":
        return Tracker()
    if kind == "tensorboard":
        return TensorBoardTracker(run_dir)
    if kind == "mlflow":
        store = Path(store) if store else Path(run_dir) / MLFLOW_STORE
        return MlflowTracker(store, experiment or store.resolve().parent.name, name, config, tags)
    raise ValueError(f"train.tracker: unknown tracker '{kind}'; known: {', '.join(TRACKERS)}")
