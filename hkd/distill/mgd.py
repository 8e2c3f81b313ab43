"""``mgd``: masked generative distillation (Yang et al., ECCV 2022).

Instead of imitating the teacher's map cell by cell, the student must be able to *generate* it from a
partly hidden version of its own map. At the chosen ``stage``:

1. ``a = A(s)``: the student's map, through a trainable 1x1 convolution ``A`` (student channels -> teacher
   channels; none when the counts agree, as in the paper);
2. ``m``: a random mask per sample and cell, 0 with probability ``ratio`` and 1 otherwise, shared by the
   channels of a cell; masking is of the student's features (the input image is never masked);
3. ``G(a * m)``: a trainable generator, 3x3 convolution -> ReLU -> 3x3 convolution at the teacher's
   channel count, must reproduce the teacher's map ``t`` there, moved onto the student's grid with
   :meth:`~hkd.distill.base.DistillMethod.align` (cell centres matched; averaged when the teacher's
   grid is finer).

The term is ``weight * mean((G(a * m) - t)^2)``, the mean over batch, channels and cells (the paper sums
over channels and cells and divides by the batch, a constant factor the weight absorbs). It does not vanish
for a student equal to the teacher (the generator is trained); it is zero where the generator reproduces the
teacher's map, e.g. at ``ratio`` 0 for a target made by the generator from the student's map.

``A`` and ``G`` are adapters on the student side: sub-modules of the method, trained and checkpointed
with it, dropped after training. The masks come from the method's own random-number generator, seeded
when the method is built from the global generator, which the trainer has just seeded with the run's
``seed``; its state is part of the method's ``state_dict``, so a resumed run draws the masks an
uninterrupted one would, and students trained in lock-step draw the masks they would alone.

Options: ``weight`` (default 51, by the balance rule of
``benchmarks/grad_ratios.py``, measured on the runs' own logs, docs/methods.md: "Default weights"; earlier 52, 28), ``ratio``, the share of masked cells
(default 0.5, in [0, 1); the paper
used 0.65 for detection and lower for classification; at the stride-16 ``bottleneck``, 3 x 3 cells on
the default study, 0.5 hides about half of them), and ``stage``: the student feature whose masked map
generates the teacher's map of the same name (default ``bottleneck``; ``"student:teacher"`` for different
names, e.g. ``bottleneck:vit``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from hkd.distill import register
from hkd.distill.base import DistillMethod
from hkd.distill.functional import parse_pair


def generator(channels: int) -> nn.Sequential:
    """MGD's generator: 3x3 conv -> ReLU -> 3x3 conv, ``channels`` in and out."""
    return nn.Sequential(nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.ReLU(),
                         nn.Conv2d(channels, channels, kernel_size=3, padding=1))


@register
class MaskedGenerative(DistillMethod):
    name = "mgd"
    teacher_features = ("bottleneck",)
    student_features = ("bottleneck",)
    # every cell masked would leave the generator nothing to read
    upper_bounds: ClassVar[dict[str, float]] = {"ratio": 1.0}

    @classmethod
    def option_defaults(cls) -> dict:
        return {"weight": 51, "ratio": 0.5, "stage": "bottleneck"}

    @classmethod
    def required_teacher_features(cls, options: dict) -> tuple[str, ...]:
        return (parse_pair(options.get("stage", cls.option_defaults()["stage"]))[1],)

    def __init__(self, teacher_specs, student_specs, num_classes, **options):
        super().__init__(teacher_specs, student_specs, num_classes, **options)
        self.s_name, self.t_name = parse_pair(self.options["stage"])
        self.student_features = (self.s_name,)
        self.teacher_features = (self.t_name,)
        cs, ct = self.channels("student", self.s_name), self.channels("teacher", self.t_name)
        self.align_channels = nn.Conv2d(cs, ct, kernel_size=1) if cs != ct else nn.Identity()
        self.generator = generator(ct)
        self.mask_rng = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))

    def get_extra_state(self) -> torch.Tensor:
        return self.mask_rng.get_state()

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.mask_rng.set_state(state)

    def draw_mask(self, like: torch.Tensor) -> torch.Tensor:
        """A ``(B, 1, h, w)`` mask for map ``like``: 0 at a cell with probability ``ratio``, else 1."""
        b, _, h, w = like.shape
        keep = torch.rand((b, 1, h, w), generator=self.mask_rng) >= float(self.options["ratio"])
        return keep.to(device=like.device, dtype=like.dtype)

    def forward(self, teacher, student, target):
        s = self.align_channels(student[self.s_name])
        generated = self.generator(s * self.draw_mask(s))
        t = self.align(teacher[self.t_name], ("teacher", self.t_name), ("student", self.s_name))
        return {"mgd": float(self.options["weight"]) * (generated - t).pow(2).mean()}
