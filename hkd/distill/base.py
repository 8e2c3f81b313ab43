"""The contract every distillation method follows.

A method is an ``nn.Module`` that

* names the teacher and student features it needs (``teacher_features`` / ``student_features``,
  using the feature names of :mod:`hkd.models`: ``enc1``..``enc4``, ``vit`` (teacher only),
  ``latent``, ``dec4``..``dec1``, ``logits``);
* owns its trainable adapters (projectors, regressors) as sub-modules: the trainer puts
  ``method.parameters()`` in the optimizer and stores ``method.state_dict()`` in checkpoints;
* returns a dict of named, already weighted loss terms; the trainer adds the segmentation loss
  (0.5 CE + 0.5 Dice), sums everything and logs each term separately.

Teacher features arrive detached (the teacher runs frozen, in eval mode, without gradients).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

FeatureShapes = dict[str, tuple[int, int, int]]  # feature name -> (channels, height, width)


class DistillMethod(nn.Module):
    """Base class of distillation methods; subclasses register with :func:`hkd.distill.register`."""

    name: ClassVar[str] = ""
    teacher_features: ClassVar[tuple[str, ...]] = ()
    student_features: ClassVar[tuple[str, ...]] = ()

    def __init__(self, teacher_shapes: FeatureShapes, student_shapes: FeatureShapes, num_classes: int, **options):
        super().__init__()
        unknown = set(options) - set(self.option_defaults())
        if unknown:
            raise ValueError(f"distillation method '{self.name}': unknown option(s) {sorted(unknown)}; "
                             f"known: {sorted(self.option_defaults())}")
        self.options = {**self.option_defaults(), **options}
        self.teacher_shapes = teacher_shapes
        self.student_shapes = student_shapes
        self.num_classes = num_classes

    @classmethod
    def option_defaults(cls) -> dict:
        """Default values of the method's options (weights, temperatures, ...)."""
        return {}

    def feature_shape(self, side: str, name: str) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of the ``side`` (``"teacher"``/``"student"``) feature ``name``."""
        shapes = self.teacher_shapes if side == "teacher" else self.student_shapes
        if name not in shapes:
            raise ValueError(f"distillation method '{self.name}' needs {side} feature '{name}'; "
                             f"shapes were given for {sorted(shapes)}")
        return tuple(int(v) for v in shapes[name])

    def require_matching_classes(self) -> None:
        """Raise unless teacher and student logits have the same number of classes."""
        ct = self.feature_shape("teacher", "logits")[0]
        cs = self.feature_shape("student", "logits")[0]
        if ct != cs:
            raise ValueError(f"distillation method '{self.name}': teacher has {ct} classes, student {cs}")

    def require_positive(self, *names: str) -> None:
        """Raise unless each named option is a positive number."""
        for n in names:
            if not float(self.options[n]) > 0:
                raise ValueError(f"distillation method '{self.name}': option '{n}' must be positive, "
                                 f"got {self.options[n]!r}")

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
