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


class DistillMethod(nn.Module):
    """Base class of distillation methods; subclasses register with :func:`hkd.distill.register`."""

    name: ClassVar[str] = ""
    teacher_features: ClassVar[tuple[str, ...]] = ()
    student_features: ClassVar[tuple[str, ...]] = ()

    def __init__(self, teacher_specs: FeatureSpecs, student_specs: FeatureSpecs, num_classes: int, **options):
        super().__init__()
        unknown = set(options) - set(self.option_defaults())
        if unknown:
            raise ValueError(f"distillation method '{self.name}': unknown option(s) {sorted(unknown)}; "
                             f"known: {sorted(self.option_defaults())}")
        self.options = {**self.option_defaults(), **options}
        self.specs = {"teacher": dict(teacher_specs), "student": dict(student_specs)}
        self.num_classes = num_classes

    @classmethod
    def option_defaults(cls) -> dict:
        """Default values of the method's options (weights, temperatures, ...)."""
        return {}

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

    def require_positive(self, *names: str) -> None:
        """Raise unless each named option is a positive number."""
        for n in names:
            if not float(self.options[n]) > 0:
                raise ValueError(f"distillation method '{self.name}': option '{n}' must be positive, "
                                 f"got {self.options[n]!r}")

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

    def __init__(self, teacher_specs: FeatureSpecs, student_specs: FeatureSpecs, num_classes: int, **options):
        super().__init__(teacher_specs, student_specs, num_classes, **options)
        self.require_matching_classes()
        self.require_positive("temperature")

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
