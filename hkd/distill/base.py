"""The contract every distillation method follows.

A method is an ``nn.Module`` that

* names the teacher and student features it needs (``teacher_features`` / ``student_features``,
  using the feature names of :mod:`hkd.models`, which say where a map lives: ``enc_s1``..``enc_s16``,
  ``vit`` (teacher only), ``bottleneck``, ``dec_s8``..``dec_s1``, ``logits``);
* reads where each map lives from :class:`~hkd.models.base.Feature` specs (channels, size and grid),
  and moves maps between the two models' grids only with :meth:`DistillMethod.align`;
* owns its trainable adapters (projectors, regressors) as sub-modules, always on the student side, so
  the teacher's targets stay fixed: the trainer puts ``method.parameters()`` in the optimizer and
  stores ``method.state_dict()`` in checkpoints;
* returns a dict of named, already weighted loss terms; the trainer adds the segmentation loss
  (0.5 CE + 0.5 Dice) times :attr:`segmentation_weight`, sums everything and logs each term and the
  gradient norm of each term separately.

Teacher features arrive detached (the teacher runs frozen, in eval mode, without gradients).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from hkd.distill.functional import align, as_name_list, parse_pair
from hkd.models.base import Feature, FeatureSpecs

SIDES = ("teacher", "student")


class MissingFeatureError(ValueError):
    """A method asks for a feature its teacher or student does not record."""

    def __init__(self, method: str, side: str, name: str, available):
        self.method, self.side, self.name, self.available = method, side, name, list(available)
        super().__init__(f"distillation method '{method}' needs {side} feature '{name}'; the {side} records "
                         f"{', '.join(self.available) or 'none'}")


class OptionError(ValueError):
    """A method option of the wrong type or out of range; ``method`` and ``option`` name it."""

    def __init__(self, method: str, option: str, problem: str):
        self.method, self.option = method, option
        super().__init__(f"distillation method '{method}': option '{option}' {problem}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class DistillMethod(nn.Module):
    """Base class of distillation methods; subclasses register with :func:`hkd.distill.register`.

    An option's type is its default's (:meth:`option_defaults`; a number, a text, a list of feature names,
    or ``None`` for a number taken from elsewhere); a number must be finite and, unless declared otherwise
    below, at least 0 (a weight). :meth:`check_options` applies these rules before any model exists.
    """

    name: ClassVar[str] = ""
    teacher_features: ClassVar[tuple[str, ...]] = ()
    student_features: ClassVar[tuple[str, ...]] = ()
    #: Numeric options that must be > 0 (temperatures, exponents).
    positive_options: ClassVar[tuple[str, ...]] = ()
    #: Numeric options that count something: whole numbers >= 1.
    count_options: ClassVar[tuple[str, ...]] = ()
    #: Numeric options with an upper bound they must stay below: name -> bound.
    upper_bounds: ClassVar[dict[str, float]] = {}
    #: Text options with a fixed set of values: name -> the values.
    option_choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: The smallest batch on which the method's terms can be non-zero.
    min_batch_size: ClassVar[int] = 1

    def __init__(self, teacher_specs: FeatureSpecs, student_specs: FeatureSpecs, num_classes: int, **options):
        super().__init__()
        self.check_options(options)
        self.options = {**self.option_defaults(), **options}
        self.specs = {"teacher": dict(teacher_specs), "student": dict(student_specs)}
        self.num_classes = num_classes

    @classmethod
    def option_defaults(cls) -> dict:
        """Default values of the method's options (weights, temperatures, ...)."""
        return {}

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Refuse unknown options and values of another type than the option's default or out of its range
        (:class:`OptionError` names the option)."""
        defaults = cls.option_defaults()
        unknown = set(options) - set(defaults)
        if unknown:
            raise ValueError(f"distillation method '{cls.name}': unknown option(s) {sorted(unknown)}; "
                             f"known: {sorted(defaults)}")
        for name, value in options.items():
            problem = cls._option_problem(name, value, defaults[name])
            if problem:
                raise OptionError(cls.name, name, f"{problem}, got {value!r}")

    @classmethod
    def _option_problem(cls, name: str, value, default) -> str | None:
        """What is wrong with ``value`` for option ``name`` (default ``default``), or None."""
        if isinstance(default, str):
            choices = cls.option_choices.get(name)
            if not isinstance(value, str):
                return "must be a text" + (f", one of {'|'.join(choices)}" if choices else "")
            return f"must be one of {'|'.join(choices)}" if choices and value not in choices else None
        if isinstance(default, (list, tuple)):
            ok = isinstance(value, str) or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))
            return None if ok else "must be a list of feature names (or one comma-separated text)"
        if isinstance(default, bool):
            return None if isinstance(value, bool) else "must be true or false"
        if value is None and default is None:
            return None
        if not _is_number(value):
            return "must be a number"
        if not math.isfinite(value):
            return "must be a finite number"
        if name in cls.count_options:
            return None if isinstance(value, int) and value >= 1 else "must be a whole number of at least 1"
        if name in cls.positive_options:
            return None if value > 0 else "must be positive"
        bound = cls.upper_bounds.get(name)
        if bound is not None:
            return None if 0 <= value < bound else f"must be in [0, {bound:g})"
        return None if value >= 0 else "must be at least 0 (a weight)"

    @property
    def segmentation_weight(self) -> float:
        """Weight of the segmentation loss in a distilled run (1 unless the method trades it off)."""
        return 1.0

    def feature(self, side: str, name: str) -> Feature:
        """Where the ``side`` (``"teacher"``/``"student"``) map ``name`` lives."""
        specs = self.specs[side]
        if name not in specs:
            raise MissingFeatureError(self.name, side, name, specs)
        return specs[name]

    def channels(self, side: str, name: str) -> int:
        return self.feature(side, name).channels

    def align(self, x: torch.Tensor, src: tuple[str, str], dst: tuple[str, str]) -> torch.Tensor:
        """Move ``x``, a map on the grid of ``src = (side, name)``, onto the grid of ``dst``.

        A projected map keeps the grid of the map it was computed from, so ``src`` names that map.
        """
        return align(x, self.feature(*src), self.feature(*dst))

    def require_matching_classes(self) -> None:
        """Raise unless teacher and student logits have the same number of classes."""
        ct, cs = self.channels("teacher", "logits"), self.channels("student", "logits")
        if ct != cs:
            raise ValueError(f"distillation method '{self.name}': teacher has {ct} classes, student {cs}")

    def require_features(self) -> None:
        """Raise unless a spec was given for every feature the method names."""
        for side, names in (("teacher", self.teacher_features), ("student", self.student_features)):
            for n in names:
                self.feature(side, n)

    @classmethod
    def required_teacher_features(cls, options: dict) -> tuple[str, ...]:
        """Teacher features an instance with ``options`` will ask for (for caching them ahead)."""
        return cls.teacher_features

    @property
    def needs_teacher(self) -> bool:
        return bool(self.teacher_features)

    def forward(self, teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor],
                target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return named loss terms given teacher/student features and the label map (B, H, W)."""
        raise NotImplementedError


class LogitsMethod(DistillMethod):
    """A method comparing the two models' logits (same classes), with a positive ``temperature`` option."""

    teacher_features: ClassVar[tuple[str, ...]] = ("logits",)
    student_features: ClassVar[tuple[str, ...]] = ("logits",)
    positive_options: ClassVar[tuple[str, ...]] = ("temperature",)

    def __init__(self, teacher_specs: FeatureSpecs, student_specs: FeatureSpecs, num_classes: int, **options):
        super().__init__(teacher_specs, student_specs, num_classes, **options)
        self.require_matching_classes()

    def logits(self, teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor]):
        """The student's logits and the teacher's, moved onto the student's grid."""
        return student["logits"], self.align(teacher["logits"], ("teacher", "logits"), ("student", "logits"))


class LayerPairsMethod(DistillMethod):
    """A method comparing pairs of maps named by its ``layers`` option: ``"student:teacher"``, or one name
    for the same feature on both sides (:func:`~hkd.distill.functional.parse_pair`); ``self.pairs`` lists
    them as ``(student, teacher)``. Subclasses give ``layers`` a default in :meth:`option_defaults`."""

    @classmethod
    def required_teacher_features(cls, options: dict) -> tuple[str, ...]:
        layers = options.get("layers", cls.option_defaults()["layers"])
        return tuple(dict.fromkeys(parse_pair(spec)[1] for spec in as_name_list(layers)))

    def __init__(self, teacher_specs: FeatureSpecs, student_specs: FeatureSpecs, num_classes: int, **options):
        super().__init__(teacher_specs, student_specs, num_classes, **options)
        self.pairs = [parse_pair(spec) for spec in as_name_list(self.options["layers"])]
        if not self.pairs:
            raise ValueError(f"distillation method '{self.name}': no layers given")
        self.student_features = tuple(dict.fromkeys(s for s, _ in self.pairs))
        self.teacher_features = tuple(dict.fromkeys(t for _, t in self.pairs))
        self.require_features()

    def on_coarser_grid(self, s_name: str, t_name: str, s: torch.Tensor, t: torch.Tensor):
        """The student map ``s`` and teacher map ``t`` of a pair, both on the grid with fewer cells."""
        fs, ft = self.feature("student", s_name), self.feature("teacher", t_name)
        dst = ("teacher", t_name) if fs.height * fs.width >= ft.height * ft.width else ("student", s_name)
        return self.align(s, ("student", s_name), dst), self.align(t, ("teacher", t_name), dst)
