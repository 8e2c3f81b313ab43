"""The training config of one run (:class:`TrainConfig`): the recipe, the model, the method and the seed.

The recipe's keys and defaults are also those of the workflow schema's ``train`` section
(``workflow/schemas/config.schema.yaml``), which adds only the workflow's own ``threads`` and
``tracker``; ``tests/unit/test_train_config.py`` holds the two to the same keys, defaults, types and choices.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field

from hkd import trust
from hkd.train.losses import LOSSES
from hkd.train.optimizers import OPTIMIZERS, SCHEDULES

PRECISIONS = ("auto", "bf16", "fp32")
AUGMENTS = ("transunet", "none")

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
    optimizer: str = "sgd"  # a name of hkd.train.optimizers.OPTIMIZERS
    lr: float = 0.01
    schedule: str = "poly"  # poly: lr (1 - t)^poly_power | cosine: from lr down to min_lr (SCHEDULES)
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
    def from_dict(cls, d: dict) -> TrainConfig:
        """The checked config of ``d``: its keys, their types and values, and the method's name (every check
        a recipe gets; a job parses its recipe once and passes the result on). Raises ValueError."""
        from hkd import distill

        fields = cls.__dataclass_fields__
        unknown = set(d) - set(fields)
        if unknown:
            raise ValueError(f"training config: unknown key(s) {sorted(unknown)}; known: {sorted(fields)}")
        missing = [name for name, f in fields.items()
                   if f.default is MISSING and f.default_factory is MISSING and name not in d]
        if missing:
            raise ValueError(f"training config: missing key(s) {missing} "
                             "(e.g. \"model\": {\"arch\": \"squeezeunet\"})")
        if d.get("method", cls.method) not in distill.available():
            raise ValueError(f"training config: unknown method '{d['method']}'; available: "
                             f"{', '.join(distill.available())}")
        wrong = [f"{k} must be {_TYPES[fields[k].type][0]}, got {v!r}" for k, v in d.items()
                 if not _has_type(v, fields[k].type)]
        if wrong:
            raise ValueError(f"training config: {'; '.join(wrong)}")
        cfg = cls(**d)
        checks = {"epochs": cfg.epochs >= 1, "batch_size": cfg.batch_size >= 1, "lr": cfg.lr > 0,
                  "optimizer": cfg.optimizer in OPTIMIZERS, "augment": cfg.augment in AUGMENTS,
                  "schedule": cfg.schedule in SCHEDULES, "min_lr": 0 <= cfg.min_lr <= cfg.lr,
                  "loss": cfg.loss in LOSSES, "momentum": 0 <= cfg.momentum <= 1,
                  "weight_decay": cfg.weight_decay >= 0, "poly_power": cfg.poly_power >= 0,
                  "max_loss": cfg.max_loss > 0, "distill_warmup": cfg.distill_warmup >= 0,
                  "precision": cfg.precision in PRECISIONS}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "loss": LOSSES, "augment": AUGMENTS,
                       "precision": PRECISIONS}
            raise ValueError(f"training config: invalid value for {', '.join(bad)}: "
                             + ", ".join(f"{k}={getattr(cfg, k)!r}"
                                         + (f" (one of {', '.join(choices[k])})" if k in choices else "")
                                         for k in bad))
        if cfg.method != "scratch" and cfg.teacher is None:
            raise ValueError(f"training config: method '{cfg.method}' needs a 'teacher' model spec")
        trust.allow_modules(trust.spec_modules([cfg.model, cfg.teacher]))  # named by the user's config
        return cfg
