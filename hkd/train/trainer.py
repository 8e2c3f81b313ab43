"""The trainer: one run trains one model (teacher or student, scratch or distilled).

Reproducible: model initialisation, data order and augmentation are seeded from ``seed`` and the
epoch number, so a run resumed from its last epoch checkpoint ends exactly as an uninterrupted run.
Outputs (all written atomically) in ``out_dir``: ``best.pt`` and ``last.pt`` (state dicts, with the
data's preprocessing: :mod:`hkd.deploy.preprocessing`),
``log.csv`` (one row per epoch) and ``metrics.json`` (``status``: completed or diverged).

Every epoch, ``log.csv`` also records the gradient norm, with respect to the student's weights, of the
segmentation loss (``gradnorm_seg``) and of each distillation term at its configured weight
(``gradnorm_<term>``), over the whole student and per block of it (``gradnorm_<term>@<block>``, with the
method's adapters as blocks of their own; :mod:`hkd.train.gradient_balance`), averaged over the epoch's
first :data:`PROBE_BATCHES` batches, so their balance is visible. ``metrics.json`` says whether the run
converged (``converged``, ``convergence``: the rule of :mod:`hkd.train.convergence`) and which blocks a
term dominated after the warm-up (``gradient_flags``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from hkd import distill
from hkd.distill import MissingFeatureError
from hkd.data.dataset import SliceSet, load_slices, read_meta
from hkd.deploy import preprocessing
from hkd.devices import autocast, resolve_device
from hkd.io import atomic_path, write_json, write_text
from hkd.models import ARCHITECTURES, build_model, count_parameters, describe_spec, label, model_blocks, recorder_of
from hkd.models.recorder import OUTPUT
from hkd.models.checkpoint import load_model, load_state, save_state
from hkd.train import augment, convergence, gradient_balance
from hkd.train.host_memory import retain_freed_memory
from hkd.train.losses import LOSSES, segmentation_loss
from hkd.train.run_folder import RunFolders
from hkd.train.progress import epoch_line
from hkd.train.teacher_targets import CachedTeacher, OnlineTeacher
from hkd.train.tracking import Tracker

log = logging.getLogger(__name__)


PRECISIONS = ("auto", "bf16", "fp32")
SCHEDULES = ("poly", "cosine")
PROBE_BATCHES = 2  # first batches of each epoch whose per-term gradient norms are measured and averaged


# The type of each kind of TrainConfig field, in words and as Python types (a float field takes an int too).
_TYPES = {"int": ("a whole number", int), "float": ("a number", (int, float)), "str": ("a text", str),
          "bool": ("true or false", bool), "dict": ("a mapping", dict), "dict | None": ("a mapping or null", (dict,))}


def _has_type(value, kind: str) -> bool:
    if value is None:
        return kind == "dict | None"
    if isinstance(value, bool):
        return kind == "bool"
    return isinstance(value, _TYPES[kind][1])


@dataclass
class TrainConfig:
    """Everything a run depends on; unknown keys are rejected by :meth:`from_dict`."""

    model: dict
    method: str = "scratch"
    method_options: dict = field(default_factory=dict)
    teacher: dict | None = None
    epochs: int = 40
    batch_size: int = 24
    optimizer: str = "sgd"  # sgd | adamw | adam
    lr: float = 0.01
    schedule: str = "poly"  # poly: lr (1 - t)^poly_power | cosine: from lr down to min_lr
    min_lr: float = 1e-6  # the cosine schedule's final learning rate
    loss: str = "ce_dice"  # ce_dice | focal_dice (see hkd.train.losses)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    augment: str = "transunet"  # transunet | none
    seed: int = 0
    device: str = "auto"
    max_loss: float = 1e4  # a loss above this (or NaN/inf) counts as divergence
    distill_warmup: float = 0.0  # epochs over which the distillation terms ramp up linearly from 0
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 elsewhere) | bf16 | fp32
    fused: bool = True  # fused optimizer update (one kernel for all parameters; CPU and CUDA)
    channels_last: bool = False  # channels-last memory format for the model and its inputs
    compile: bool = False  # torch.compile the model (compile time is paid at the first steps)
    retain_freed_memory: bool = True  # on the CPU, keep freed host memory in the process (hkd.train.host_memory)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"training config: unknown key(s) {sorted(unknown)}")
        wrong = [f"{k} must be {_TYPES[cls.__dataclass_fields__[k].type][0]}, got {v!r}" for k, v in d.items()
                 if not _has_type(v, cls.__dataclass_fields__[k].type)]
        if wrong:
            raise ValueError(f"training config: {'; '.join(wrong)}")
        cfg = cls(**d)
        checks = {"epochs": cfg.epochs >= 1, "batch_size": cfg.batch_size >= 1, "lr": cfg.lr > 0,
                  "optimizer": cfg.optimizer in ("sgd", "adamw", "adam"),
                  "augment": cfg.augment in ("transunet", "none"), "schedule": cfg.schedule in SCHEDULES,
                  "min_lr": 0 <= cfg.min_lr <= cfg.lr, "loss": cfg.loss in LOSSES,
                  "weight_decay": cfg.weight_decay >= 0, "poly_power": cfg.poly_power >= 0,
                  "distill_warmup": cfg.distill_warmup >= 0, "precision": cfg.precision in PRECISIONS}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"training config: invalid value for {', '.join(bad)}: "
                             + ", ".join(f"{k}={getattr(cfg, k)!r}" for k in bad))
        if cfg.method != "scratch" and cfg.teacher is None:
            raise ValueError(f"training config: method '{cfg.method}' needs a 'teacher' model spec")
        return cfg


def run_spec(model: dict, image_size: int, num_classes: int) -> dict:
    """The spec a run builds its model from: the configured model and, for hkd's own networks, the data's
    classes (TransUNet also the slice size); an outside network states its own (checked by
    :func:`check_output`)."""
    arch = ARCHITECTURES.get(str(model.get("arch", "")).lower())
    if arch is None or not arch.takes_classes:  # an unknown arch is refused when the model is built
        return dict(model)
    spec = {**model, "num_classes": num_classes}
    if spec.get("arch") == "transunet":
        spec["img_size"] = image_size
    return spec


def check_output(role: str, spec: dict, specs: dict, num_classes: int, image_size: int) -> None:
    """Refuse a model whose logits do not have one channel per class of the data and the input's size."""
    logits = specs[OUTPUT]
    if logits.channels != num_classes:
        raise ValueError(f"{role} ({label(spec)}): its logits have {logits.channels} channels, but the data has "
                         f"{num_classes} classes (data.classes); set the network's output channels (e.g. out_channels) "
                         "to match")
    if (logits.height, logits.width) != (image_size, image_size):
        raise ValueError(f"{role} ({label(spec)}): its logits are {logits.height}x{logits.width} on a "
                         f"{image_size}x{image_size} input; a segmentation network's logits must have the input's size "
                         "(upsample its output, or name the module that returns full-size logits as feature 'logits')")


def check_batch_size(cfg: TrainConfig) -> None:
    """Refuse a batch size on which the method's terms are always 0 (a method relating a batch's images)."""
    smallest = distill.get(cfg.method).min_batch_size
    if cfg.batch_size < smallest:
        raise ValueError(f"distillation method '{cfg.method}' relates the images of a batch: with batch_size "
                         f"{cfg.batch_size} its term is 0 at every step; use a batch_size of at least {smallest}")


def check_teacher_spec(path: str | Path, spec: dict, configured: dict | None) -> None:
    """Refuse a teacher checkpoint whose model is not the configured teacher (e.g. a student's checkpoint)."""
    if not configured:
        return
    differ = sorted(k for k in configured if json.dumps(spec.get(k)) != json.dumps(configured[k]))
    if differ:
        raise ValueError(f"--teacher {path}: holds a {spec.get('arch')} model ("
                         + ", ".join(f"{k} {spec.get(k)!r}" for k in differ) + "), but the configured teacher has "
                         + ", ".join(f"{k} {configured[k]!r}" for k in differ))


def build_method(method: str, options: dict, teacher_specs: dict, teacher_model: dict | None, student_specs: dict,
                 student_model: dict, num_classes: int):
    """The run's distillation method; a feature the method needs and a model does not record is an error
    naming the model, the feature and what the model records (:class:`~hkd.distill.MissingFeatureError`)."""
    try:
        return distill.build(method, teacher_specs, student_specs, num_classes, **options)
    except MissingFeatureError as exc:
        model = teacher_model if exc.side == "teacher" else student_model
        exc.args = (f"the {exc.side} ({label(model or {})}) records no feature '{exc.name}', which distillation "
                    f"method '{method}' needs; it records: {', '.join(exc.available) or 'none'} (name a module for "
                    f"'{exc.name}' in its model spec's 'features')",)
        raise


class ConfigCheckError(ValueError):
    """A training config a run would refuse; ``part`` says which: recipe, batch, model, teacher or method
    (``option``: the method's option, where one is to blame)."""

    def __init__(self, part: str, message: str, option: str | None = None):
        super().__init__(" ".join(message.split()))
        self.part, self.option = part, option


def check_config(cfg: dict, image_size: int, num_classes: int, _cache: dict | None = None) -> TrainConfig:
    """Check a training config with the code a run uses, before any data or weights exist: the recipe
    (:meth:`TrainConfig.from_dict`), the student's and the teacher's model specs (:func:`describe_spec`,
    shapes measured without weights, never trained) and the method's options (:func:`hkd.distill.build`).
    ``_cache`` (a dict) keeps feature specs between calls. Raises :class:`ConfigCheckError`."""
    cache = {} if _cache is None else _cache

    def features(part: str, model: dict) -> dict:
        spec = run_spec(model, image_size, num_classes)
        key = json.dumps(spec, sort_keys=True)
        if key not in cache:
            try:
                role = "teacher" if part == "teacher" else "model"
                cache[key] = describe_spec(spec, image_size, role)
                check_output(role, spec, cache[key], num_classes, image_size)
            except (ValueError, TypeError, RuntimeError, ImportError) as exc:
                raise ConfigCheckError(part, str(exc)) from None
        return cache[key]

    try:
        c = TrainConfig.from_dict(cfg)
    except (ValueError, TypeError) as exc:
        raise ConfigCheckError("recipe", str(exc)) from None
    try:
        distill.get(c.method).check_options(c.method_options)
    except distill.OptionError as exc:
        raise ConfigCheckError("method", str(exc), exc.option) from None
    except (ValueError, KeyError) as exc:
        raise ConfigCheckError("method", str(exc).strip('"')) from None
    try:
        check_batch_size(c)
    except ValueError as exc:
        raise ConfigCheckError("batch", str(exc)) from None
    student = features("model", c.model)
    teacher = features("teacher", c.teacher) if c.method != "scratch" else {}
    try:
        build_method(c.method, c.method_options, teacher, c.teacher, student, c.model, num_classes)
    except MissingFeatureError as exc:
        raise ConfigCheckError("teacher" if exc.side == "teacher" else "model", str(exc)) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigCheckError("method", str(exc).strip('"')) from None
    return c


def check_study_runs(runs: list[tuple[str, str, dict]], image_size: int, num_classes: int) -> None:
    """Check every run of a study before it starts (the workflow's dry run): ``runs`` lists
    (recipe section, config key of its model, training config). Errors name the config key."""
    cache: dict = {}
    for section, model_key, cfg in runs:
        try:
            check_config(cfg, image_size, num_classes, cache)
        except ConfigCheckError as exc:
            key = {"recipe": f"train or {section}.train", "model": model_key, "teacher": "teacher.model",
                   "batch": f"train.batch_size or {section}.train.batch_size",
                   "method": f"distill.{cfg.get('method')}" + (f".{exc.option}" if exc.option else "")}[exc.part]
            raise ValueError(f"config key {key}: {exc}") from None


@torch.no_grad()
def validate(model: torch.nn.Module, data: SliceSet, num_classes: int, device, batch_size: int = 32,
             precision: str = "auto") -> dict:
    """Per-class Dice and IoU pooled over all validation slices (intersection and sums accumulated)."""
    model.eval()
    inter = torch.zeros(num_classes, dtype=torch.float64)
    psum = torch.zeros(num_classes, dtype=torch.float64)
    gsum = torch.zeros(num_classes, dtype=torch.float64)
    for i in range(0, len(data), batch_size):
        x = data.image[i:i + batch_size].to(device).float()
        y = data.label[i:i + batch_size].cpu()
        with autocast(device, precision):
            pred = model(x).argmax(1).cpu()
        for c in range(num_classes):
            p, g = pred == c, y == c
            inter[c] += (p & g).sum()
            psum[c] += p.sum()
            gsum[c] += g.sum()
    dice = torch.where(psum + gsum > 0, 2 * inter / (psum + gsum).clamp(min=1), torch.nan)
    iou = torch.where(psum + gsum > 0, inter / (psum + gsum - inter).clamp(min=1), torch.nan)
    fg = slice(1, num_classes)
    return {"dice": dice.tolist(), "iou": iou.tolist(),
            "mean_dice": float(torch.nanmean(dice[fg])), "mean_iou": float(torch.nanmean(iou[fg]))}


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
        self.preprocessing = preprocessing.record(meta)  # travels with every checkpoint (hkd predict)
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
        self.targets = self._teacher_targets(teacher_ckpt, teacher_cache, teacher)
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
        params = list(self.model.parameters()) + list(self.method.parameters())
        fused = {"fused": True} if cfg.fused and self.device.type in ("cpu", "cuda") else {}
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
        elif cfg.optimizer == "adam":
            self.opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
        else:
            self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.probe = self._probe_blocks()
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

    def _teacher_targets(self, teacher_ckpt: Path | None, teacher_cache: Path | None,
                         teacher: OnlineTeacher | None = None, data: tuple[SliceSet, SliceSet] | None = None):
        """Where a distilled run's teacher features come from (None for scratch runs); ``teacher``, an
        online teacher shared with other runs, is used as it is."""
        cfg = self.cfg
        if cfg.method == "scratch":
            return None
        if teacher is not None:
            return teacher
        if teacher_cache is not None:
            if cfg.augment != "none":
                raise ValueError(f"{teacher_cache}: a teacher cache holds the features of the un-augmented slices, "
                                 f"exact only for runs with augment 'none' (this run: '{cfg.augment}'); "
                                 "run the teacher online instead (--teacher)")
            names = distill.get(cfg.method).required_teacher_features({**cfg.method_options})
            return CachedTeacher(teacher_cache, names, len(self.train_set), self.device)
        if teacher_ckpt is None:
            raise ValueError(f"method '{cfg.method}' needs a teacher checkpoint or a teacher cache")
        teacher, spec = load_model(teacher_ckpt)
        check_teacher_spec(teacher_ckpt, spec, cfg.teacher)
        return OnlineTeacher(teacher, spec, self.size, self.device, lambda: autocast(self.device, cfg.precision))

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
        (self.work_dir / "best.pt").unlink(missing_ok=True)  # stale best of an earlier run (the folder is hkd's)

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        self.opt.load_state_dict(state["optimizer"])
        self.best = float(state["best"])
        self.history = json.loads(state["history"])
        self.start_epoch = int(state["epoch"]) + 1
        log.info("resumed from %s after epoch %d", self.resume_path, self.start_epoch - 1)

    # --- training --------------------------------------------------------------------------------
    def _lr(self, step: int) -> float:
        cfg = self.cfg
        if cfg.schedule == "cosine":
            return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * step / self.total_steps))
        return self.cfg.lr * (1.0 - step / self.total_steps) ** self.cfg.poly_power

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

    def _probe_blocks(self) -> dict:
        """The parameters whose gradients are probed, and the block each belongs to: the student's blocks
        (:func:`hkd.models.model_blocks`), then the method's adapters, one block per top-level
        sub-module (``adapter.<name>``)."""
        names, params, owner = [], [], []
        for block, block_params in model_blocks(self.model, self.spec).items():
            names.append(block)
            for p in block_params:
                if p.requires_grad:
                    params.append(p)
                    owner.append(len(names) - 1)
        student = len(names)
        for pname, p in self.method.named_parameters():
            if not p.requires_grad:
                continue
            block = gradient_balance.ADAPTER + ("." + pname.split(".")[0] if "." in pname else "")
            if block not in names:
                names.append(block)
            params.append(p)
            owner.append(names.index(block))
        return {"blocks": names, "student": student, "params": params,
                "owner": torch.tensor(owner, dtype=torch.long, device=self.device)}

    def gradient_norms(self, seg: dict[str, torch.Tensor], dist: dict[str, torch.Tensor]) -> dict[str, float]:
        """Gradient norms of the segmentation loss (at the method's weight) and of each distillation term:
        over the student's weights (``gradnorm_<term>``) and per block (``gradnorm_<term>@<block>``;
        adapter blocks for the distillation terms only, the segmentation loss does not reach them).

        One gradient per term over all probed parameters; the squared norms are summed per block, so the
        student's blocks add up to the whole-student norm.
        """
        probe, col = self.probe, gradient_balance.column
        blocks, student = probe["blocks"], probe["student"]
        norms = {}
        for name, value in {gradient_balance.SEG: self.method.segmentation_weight * sum(seg.values()),
                            **dist}.items():
            shown = blocks[:student] if name == gradient_balance.SEG else blocks
            if not (torch.is_tensor(value) and value.requires_grad):
                norms.update({col(name): 0.0, **{col(name, b): 0.0 for b in shown}})
                continue
            grads = torch.autograd.grad(value, probe["params"], retain_graph=True, allow_unused=True)
            squares = torch.stack([g.double().pow(2).sum() if g is not None
                                   else torch.zeros((), dtype=torch.float64, device=p.device)
                                   for g, p in zip(grads, probe["params"])])
            per_block = torch.zeros(len(blocks), dtype=torch.float64, device=squares.device)
            per_block = per_block.index_add_(0, probe["owner"].to(squares.device), squares).tolist()  # one sync
            norms[col(name)] = math.sqrt(sum(per_block[:student]))
            norms.update({col(name, b): math.sqrt(v) for b, v in zip(blocks, per_block) if b in shown})
        return norms

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
        norms = self.gradient_norms(seg, dist) if probe else {}
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
                lr = self._lr(step)
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
            val = validate(self.model, self.val_set, len(self.classes), self.device, precision=self.cfg.precision)
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
                save_state(self.work_dir / "best.pt", {**self._model_state(epoch), "val": json.dumps(val)})
            if self.resume_path:
                save_state(self.resume_path, self._state(epoch))
            self.tracker.epoch(row)
        self.metrics = self._finish(status, diverged_at, time.time() - started)

    def _finish(self, status: str, diverged_at: dict | None, seconds: float) -> dict:
        epoch = self.history[-1]["epoch"] if self.history else 0
        save_state(self.out_dir / "last.pt", self._model_state(epoch))
        best = self.work_dir / "best.pt"
        if not best.exists():  # diverged before the first validation: the last finite state
            shutil.copyfile(self.out_dir / "last.pt", best)
        if best != self.out_dir / "best.pt":
            with atomic_path(self.out_dir / "best.pt") as tmp:
                shutil.copyfile(best, tmp)
        best_row = max(self.history, key=lambda r: r["val_dice"]) if self.history else None
        best_state = load_state(self.out_dir / "best.pt")
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
        }
        metrics["converged"], metrics["convergence"] = convergence.assess(self.history, status)
        metrics["gradient_flags"] = gradient_balance.flags(self.history, self.cfg.distill_warmup)
        write_text(self.out_dir / "log.csv", _csv(self.history))
        write_json(self.out_dir / "metrics.json", metrics)
        self.tracker.finish(metrics, self.out_dir / "metrics.json")
        self.folders.remove_work()
        return metrics


def _csv(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r)) or ["epoch"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def train(cfg: dict, prepared: str | Path, out_dir: str | Path, resume_dir: str | Path | None = None,
          teacher_ckpt: str | Path | None = None, progress: bool = True,
          teacher_cache: str | Path | None = None, tracker: Tracker | None = None) -> dict:
    """Train one model as configured by ``cfg`` (see :class:`TrainConfig`); returns the metrics.

    Distilled runs need ``teacher_ckpt`` (the teacher runs online) or ``teacher_cache`` (see
    :mod:`hkd.train.teacher_cache`). ``tracker`` (:mod:`hkd.train.tracking`) receives every epoch's row.
    """
    run = Run(TrainConfig.from_dict(cfg), Path(prepared), Path(out_dir),
              Path(resume_dir) if resume_dir else None, Path(teacher_ckpt) if teacher_ckpt else None, progress,
              Path(teacher_cache) if teacher_cache else None, tracker=tracker)
    return run.fit()
