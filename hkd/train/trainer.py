"""The trainer: one run trains one model (teacher or student, scratch or distilled).

Reproducible: model initialisation, data order and augmentation are seeded from ``seed`` and the
epoch number, so a run resumed from its last epoch checkpoint ends exactly as an uninterrupted run.
Outputs (all written atomically) in ``out_dir``, the files of :data:`hkd.run_files.RUN_FILES`:
``best.pt`` and ``last.pt`` (state dicts, with the data's preprocessing:
:mod:`hkd.data.preprocessing_record`), ``log.csv`` (one row per epoch) and ``metrics.json``
(``status``: completed or diverged).

Every epoch, ``log.csv`` also records the gradient norm, with respect to the student's weights, of the
segmentation loss (``gradnorm_seg``) and of each distillation term at its configured weight
(``gradnorm_<term>``), over the whole student and per block of it (``gradnorm_<term>@<block>``, with the
method's adapters as blocks of their own; :mod:`hkd.train.gradient_probe`), averaged over the epoch's
first :data:`~hkd.train.gradient_probe.PROBE_BATCHES` batches, so their balance is visible.
``metrics.json`` says whether the run converged (``converged``, ``convergence``: the rule of
:mod:`hkd.train.convergence`) and which blocks a term dominated after the warm-up (``gradient_flags``,
:mod:`hkd.train.gradient_balance`).

The config is :class:`~hkd.train.config.TrainConfig`; the checks a run passes before it trains are in
:mod:`hkd.train.preflight`, its optimiser and schedule in :mod:`hkd.train.optimizers`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from hkd.data.dataset import SliceSet, load_slices, read_meta
from hkd.data.preprocessing_record import record as preprocessing_record
from hkd.devices import autocast, resolve_device
from hkd.guard import remove_own
from hkd.io import atomic_path, write_json, write_text
from hkd.models import build_model, count_parameters, recorder_of
from hkd.models.checkpoint import load_state, save_state
from hkd.run_files import RUN_FILES
from hkd.train import augment, convergence, gradient_balance
from hkd.train.config import TrainConfig
from hkd.train.gradient_probe import PROBE_BATCHES, GradientProbe
from hkd.train.host_memory import retain_freed_memory
from hkd.train.losses import segmentation_loss
from hkd.train.optimizers import build_optimizer, learning_rate
from hkd.train.preflight import build_method, check_batch_size, check_output, run_spec
from hkd.train.progress import epoch_line
from hkd.train.run_folder import RunFolders
from hkd.train.teacher_targets import OnlineTeacher, teacher_targets
from hkd.train.tracking import Tracker
from hkd.train.validation import validation_dice_iou

log = logging.getLogger(__name__)

BEST, LAST, LOG_CSV, METRICS = RUN_FILES  # the files a finished run leaves in its output folder


def _on_device(data: SliceSet, device: torch.device) -> SliceSet:
    """Slices stored once on the training device, so no step waits for a host-to-device copy: on a GPU as
    float16 images (intensities in [0, 1] kept to 5e-4, 0.2 HU of the default window, finer than the bf16
    arithmetic of the step) and uint8 labels; on the CPU as they are."""
    if device.type == "cpu":
        return data
    return SliceSet(image=data.image.to(device, torch.float16), label=data.label.to(device, torch.uint8),
                    **{k: v for k, v in vars(data).items() if k not in ("image", "label")})


class Run:
    """State of one training run; :meth:`fit` does the work."""

    def __init__(self, cfg: TrainConfig, prepared: Path, out_dir: Path, resume_dir: Path | None,
                 teacher_ckpt: Path | None, progress: bool = True, teacher_cache: Path | None = None,
                 teacher: OnlineTeacher | None = None, data: tuple[SliceSet, SliceSet] | None = None,
                 tracker: Tracker | None = None):
        self.cfg, self.out_dir, self.progress = cfg, Path(out_dir), progress
        self.tracker = tracker or Tracker()  # live curves (hkd.train.tracking); reads the epoch rows only
        # The work folder holds the resume state and the best checkpoint so far; it is not a declared
        # output, so a workflow manager does not delete it when a killed run is restarted.
        self.work_dir = Path(resume_dir) if resume_dir else self.out_dir
        self.resume_path = self.work_dir / "state.pt" if resume_dir else None
        # Written only when new, empty or hkd's, by one run at a time (claimed and locked when training starts).
        self.folders = RunFolders(self.out_dir, resume_dir)
        self.folders.check()
        check_batch_size(cfg)
        meta = read_meta(prepared)
        self.preprocessing = preprocessing_record(meta)  # travels with every checkpoint (hkd predict)
        self.classes = meta["classes"]
        self.size = int(meta["image_size"])
        self.fill = float(meta.get("scale", (0.0, 1.0))[0])  # image value outside a rotated slice
        self.device = resolve_device(cfg.device)
        if cfg.retain_freed_memory and self.device.type == "cpu":
            retain_freed_memory()
        # ``data``: the (training, validation) slices of another run on the same data and device, shared
        self.data = data or (_on_device(load_slices(prepared, "train"), self.device),
                             _on_device(load_slices(prepared, "val"), self.device))
        self.train_set, self.val_set = self.data
        self.spec = run_spec(cfg.model, self.size, len(self.classes))
        self.targets = teacher_targets(cfg, teacher_ckpt, teacher_cache, teacher, len(self.train_set), self.size,
                                       self.device)
        teacher_specs = self.targets.specs if self.targets else {}
        # The student's and the adapters' initial weights come from the seed alone (loading the teacher,
        # above, draws random numbers too; a run given a shared teacher must start the same).
        torch.manual_seed(cfg.seed)
        self.model = build_model(self.spec).to(self.device)
        role = "student" if cfg.teacher else "model"
        self.features = recorder_of(self.model, self.spec, role)
        student_specs = self.features.describe(self.size)
        check_output(role, self.spec, student_specs, len(self.classes), self.size)
        self.method = build_method(cfg.method, cfg.method_options, teacher_specs, cfg.teacher, student_specs,
                                   self.spec, len(self.classes)).to(self.device)
        self.opt = build_optimizer(cfg, list(self.model.parameters()) + list(self.method.parameters()), self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.probe = GradientProbe(self.model, self.spec, self.method, self.device)
        if cfg.compile:  # compiled in place: the recorder's hooks stay on its modules
            self.model.compile()
        self.steps_per_epoch = math.ceil(len(self.train_set) / cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.history: list[dict] = []
        self.best = -1.0
        self.start_epoch = 1
        self.distill_scale = 1.0
        self.fingerprint = json.dumps({"cfg": cfg.__dict__, "spec": self.spec, "n_train": len(self.train_set)},
                                      sort_keys=True, default=str)

    # --- checkpoints -----------------------------------------------------------------------------
    def _state(self, epoch: int) -> dict:
        return {"model": self.model.state_dict(), "method": self.method.state_dict(),
                "optimizer": self.opt.state_dict(), "epoch": epoch, "best": self.best,
                "history": json.dumps(self.history), "spec": json.dumps(self.spec),
                "fingerprint": self.fingerprint}

    def _model_state(self, epoch: int) -> dict:
        return {"model": self.model.state_dict(), "method": self.method.state_dict(), "epoch": epoch,
                "spec": json.dumps(self.spec), "method_name": self.cfg.method,
                "preprocessing": json.dumps(self.preprocessing)}

    def try_resume(self) -> None:
        """Continue from the work folder's state when it was written by this same configuration."""
        if self.resume_path and self.resume_path.exists():
            try:
                state = load_state(self.resume_path)
            except ValueError as exc:  # unreadable or foreign: not this run's state, start afresh
                log.warning("ignoring %s", exc)
                state = {}
            if state.get("fingerprint") == self.fingerprint:
                self._restore(state)
                return
            if state:
                log.info("ignoring %s: written by a run with another configuration", self.resume_path)
        remove_own(self.work_dir / BEST)  # stale best of an earlier run (hkd's: checked when the run claimed it)

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        self.opt.load_state_dict(state["optimizer"])
        self.best = float(state["best"])
        self.history = json.loads(state["history"])
        self.start_epoch = int(state["epoch"]) + 1
        log.info("resumed from %s after epoch %d", self.resume_path, self.start_epoch - 1)

    # --- training --------------------------------------------------------------------------------
    def _distill_scale(self, step: int) -> float:
        """Weight of the distillation terms: ramps from 0 to 1 over ``distill_warmup`` epochs."""
        warmup = self.cfg.distill_warmup * self.steps_per_epoch
        return 1.0 if warmup <= 0 else min(1.0, step / warmup)

    def _epoch_generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)

    def teacher_features(self, idx: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The teacher's features of batch ``x`` (training slices ``idx``, already augmented)."""
        if self.targets is None:
            return {}
        return self.targets(idx, x, tuple(self.method.teacher_features))

    def _step_losses(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                     aug: dict | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Segmentation terms (unweighted) and the method's distillation terms."""
        if aug is not None:
            x, y = augment.apply(aug, x, label=y, fill=self.fill)
        tfeats = self.teacher_features(idx, x)  # the teacher sees exactly the augmented slice
        names = list(dict.fromkeys([*self.method.student_features, "logits"]))
        with autocast(self.device, self.cfg.precision):
            sfeats = self.features(x, names)
        sfeats = {k: v.float() for k, v in sfeats.items()}
        return segmentation_loss(sfeats["logits"], y, self.cfg.loss), self.method(tfeats, sfeats, y)

    def train_step(self, idx: torch.Tensor, aug: dict | None, probe: bool = False) -> dict[str, torch.Tensor]:
        """One optimisation step on training slices ``idx``; returns the loss terms and ``loss``.

        During the distillation warm-up the distillation terms are scaled by ``distill_scale`` and the
        segmentation weight moves from 1 to the method's. With ``probe``, the gradient norms of the
        terms at their configured weights are returned too (``gradnorm_*``, floats). A non-finite or
        too large loss is returned without updating the weights.
        """
        idx_here = idx.to(self.train_set.image.device)
        x = self.train_set.image[idx_here].float()
        y = self.train_set.label[idx_here].long()
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        seg, dist = self._step_losses(x, y, idx, aug)
        norms = self.probe.norms(seg, dist) if probe else {}
        seg_weight = 1.0 - self.distill_scale * (1.0 - self.method.segmentation_weight)
        terms = {**{k: seg_weight * v for k, v in seg.items()}, **{k: self.distill_scale * v for k, v in dist.items()}}
        loss = sum(terms.values())
        if torch.isfinite(loss) and loss.item() <= self.cfg.max_loss:
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return {**terms, "loss": loss, **norms}

    def fit(self) -> dict:
        """Train as configured; returns the metrics (also written to ``metrics.json``)."""
        for _ in self.steps():
            pass
        return self.metrics

    def steps(self):
        """Train as configured, yielding after every optimisation step, so that several runs can advance
        together (:mod:`hkd.train.lockstep`); ``self.metrics`` holds the metrics at the end."""
        try:
            self.folders.claim()
            yield from self._steps()
        finally:
            self.folders.release()

    def _steps(self):
        cfg = self.cfg
        self.try_resume()
        self.tracker.start(self.history)
        started = time.time() - sum(r["seconds"] for r in self.history)
        status, diverged_at = "completed", None
        for epoch in range(self.start_epoch, cfg.epochs + 1):
            t0 = time.time()
            self.model.train()
            self.method.train()
            gen = self._epoch_generator(epoch)
            torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout
            order = torch.randperm(len(self.train_set), generator=gen)
            sums: dict[str, float] = {}
            probe: dict[str, list[float]] = {}
            n_batches = 0
            bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
                       disable=not self.progress, leave=False, mininterval=5)
            for b in bar:
                step = (epoch - 1) * self.steps_per_epoch + b
                lr = learning_rate(cfg, step, self.total_steps)
                self.distill_scale = self._distill_scale(step)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                aug = augment.sample_params(len(idx), gen) if cfg.augment == "transunet" else None
                terms = self.train_step(idx, aug, probe=b < PROBE_BATCHES)
                loss = terms.pop("loss")
                for k in [k for k in terms if k.startswith("gradnorm_")]:
                    probe.setdefault(k, []).append(terms.pop(k))
                if not torch.isfinite(loss) or loss.item() > cfg.max_loss:
                    status, diverged_at = "diverged", {"epoch": epoch, "step": step, "loss": float(loss.item())}
                    log.warning("loss %s at epoch %d step %d: run diverged", loss.item(), epoch, step)
                    break
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                n_batches += 1
                yield step
            if status == "diverged":
                break
            val = validation_dice_iou(self.model, self.val_set, len(self.classes), self.device, precision=self.cfg.precision)
            row = {"epoch": epoch, "lr": lr, **{k: v / max(n_batches, 1) for k, v in sums.items()},
                   **{k: sum(v) / len(v) for k, v in probe.items()},
                   "val_dice": val["mean_dice"], "val_iou": val["mean_iou"],
                   **{f"val_dice_{c}": d for c, d in zip(self.classes[1:], val["dice"][1:])},
                   "seconds": time.time() - t0}
            self.history.append(row)
            log.info("%s", epoch_line(row, self.history, cfg.epochs))
            if val["mean_dice"] > self.best:
                self.best = val["mean_dice"]
                self.best_val = val
                save_state(self.work_dir / BEST, {**self._model_state(epoch), "val": json.dumps(val)})
            if self.resume_path:
                save_state(self.resume_path, self._state(epoch))
            self.tracker.epoch(row)
        self.metrics = self._finish(status, diverged_at, time.time() - started)

    def _finish(self, status: str, diverged_at: dict | None, seconds: float) -> dict:
        epoch = self.history[-1]["epoch"] if self.history else 0
        save_state(self.out_dir / LAST, self._model_state(epoch))
        best = self.work_dir / BEST
        if not best.exists():  # diverged before the first validation: the last finite state
            with atomic_path(best) as tmp:
                shutil.copyfile(self.out_dir / LAST, tmp)
        if best != self.out_dir / BEST:
            with atomic_path(self.out_dir / BEST) as tmp:
                shutil.copyfile(best, tmp)
        best_row = max(self.history, key=lambda r: r["val_dice"]) if self.history else None
        best_state = load_state(self.out_dir / BEST)
        val = json.loads(best_state["val"]) if "val" in best_state else None
        metrics = {
            "status": status,
            "diverged": diverged_at,
            "method": self.cfg.method,
            "model": self.spec,
            "params": count_parameters(self.model),
            "epochs_completed": epoch,
            "best_epoch": best_row["epoch"] if best_row else None,
            "val_dice": best_row["val_dice"] if best_row else None,
            "val_iou": best_row["val_iou"] if best_row else None,
            "val_per_class": ({c: {"dice": d, "iou": i} for c, d, i in
                               zip(self.classes, val["dice"], val["iou"])} if val else None),
            "seconds": seconds,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
        }
        metrics["converged"], metrics["convergence"] = convergence.assess(self.history, status)
        metrics["stalled"] = convergence.stalled(self.history)
        metrics["gradient_flags"] = gradient_balance.flags(self.history, self.cfg.distill_warmup)
        write_text(self.out_dir / LOG_CSV, _csv(self.history))
        write_json(self.out_dir / METRICS, metrics)
        self.tracker.finish(metrics, self.out_dir / METRICS)
        self.folders.remove_work()
        return metrics


def _csv(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r)) or ["epoch"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def train(cfg: TrainConfig | dict, prepared: str | Path, out_dir: str | Path, resume_dir: str | Path | None = None,
          teacher_ckpt: str | Path | None = None, progress: bool = True,
          teacher_cache: str | Path | None = None, tracker: Tracker | None = None) -> dict:
    """Train one model as configured by ``cfg`` (a :class:`TrainConfig`, or a dict parsed into one); returns the
    metrics.

    Distilled runs need ``teacher_ckpt`` (the teacher runs online) or ``teacher_cache`` (see
    :mod:`hkd.train.teacher_cache`). ``tracker`` (:mod:`hkd.train.tracking`) receives every epoch's row.
    """
    cfg = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)
    run = Run(cfg, Path(prepared), Path(out_dir),
              Path(resume_dir) if resume_dir else None, Path(teacher_ckpt) if teacher_ckpt else None, progress,
              Path(teacher_cache) if teacher_cache else None, tracker=tracker)
    return run.fit()
