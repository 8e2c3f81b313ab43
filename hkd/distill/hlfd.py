"""``hlfd``: Hierarchical Layer-selective Feedback Distillation (Gorade et al., ISBI 2024).

``L_extra = alpha * PLFD + beta * FLFD`` (returned as the terms ``plfd`` and ``flfd``)::

    FLFD = 0.5 * AT_u(s_e1, [t_e2, t_e3, t_e4]) + 0.5 * sum_{k=2,3,4} AT(s_ek, t_e5)
    PLFD = 0.5 * KL_u(P(s_d5), [t_d5, t_d4, t_d3]) + 0.5 * sum_{k=4,3,2} KL(Q_k(s_dk), t_logits)

* ``AT(s, t)``: attention maps ``a = L2-normalise(flatten(mean_c |x|^p))``, compared on the coarser grid
  (the finer map is averaged down onto it); ``sum over positions of (a_s - a_t)^2``, mean over the batch.
* ``AT_u``: the teacher maps are aligned onto the coarsest of them and concatenated on channels (attention
  maps are channel-free, so no projector); the student map is averaged down onto that grid.
* ``KL_u``: the teacher's decoder maps are aligned onto the coarsest of them and concatenated: a fixed
  target of ``C_t`` channels. ``P`` is a trained 1x1 conv on the student side (student ``d5`` channels ->
  ``C_t``); the projected map is aligned onto the target's grid and
  ``T^2 * KL(softmax(t/T) || softmax(P(s)/T))`` is taken over channels per pixel, mean over pixels and batch.
  (Projecting the teacher instead would make the target move with the student, and the pair could collapse
  together.)
* ``Q_k``: a trained 1x1 conv per student decoder layer (channels -> classes), aligned onto the logits'
  grid, the same per-pixel KL over classes against the teacher's logits.

Every 1x1 conv is a registered sub-module, so it is optimised and checkpointed with the student.

Layer mapping. The original networks return ``(e1..e5, d5, d4, d3, d2, out)``: ``e1..e5`` the encoder
stages from shallow to deep and ``d5..d2`` the decoder stages in execution order. The roles are kept
stage by stage; the names say the stride of each map, so the table is also where the maps live:

========  ===============================  ===================================
original  student SqueezeUNet              teacher TransUNet
========  ===============================  ===================================
e1        ``enc_s1``                       (unused)
e2..e4    ``enc_s2``, ``enc_s4``, ``enc_s8``  ``enc_s4``, ``enc_s8``, ``enc_s16`` (ResNet stages)
e5        (unused)                         ``bottleneck`` (stride 16, the ViT output after ``conv_more``)
d5        ``dec_s8``                       ``dec_s8``
d4, d3    ``dec_s4``, ``dec_s2``           ``dec_s4``, ``dec_s2``
d2        ``dec_s1``                       (unused)
out       ``logits``                       ``logits``
========  ===============================  ===================================

So the student's shallowest encoder stage is fed back the teacher's whole CNN hierarchy; its deeper
encoder stages each match the teacher's deepest spatial representation, the one that carries the
transformer's global context (the map the ``latent`` method uses); the student's first decoder block
learns the teacher's first three decoder blocks; and the student's later decoder blocks each predict the
teacher's class maps.

Options: ``preset`` (``default`` or ``paper``) and ``alpha``, ``beta``, ``temperature``, ``p``, which
override the preset's values when given. ``paper`` is the published setting (alpha 0.1, beta 0.9, T 4,
p 4). ``default`` keeps its T and p and sets alpha 0.16 and beta 1.4, by the balance rule of
``benchmarks/grad_ratios.py``, measured on the runs' own logs (docs/methods.md: "Default weights"); earlier alpha 0.083, beta 0.53; alpha 0.1, beta 0.9
"""

from __future__ import annotations

import torch
from torch import nn

from hkd.distill import register
from hkd.distill.base import DistillMethod
from hkd.distill.functional import align, at_map, coarsest, concat_on, kd_kl

TEACHER_MIDDLE = ("enc_s4", "enc_s8", "enc_s16")  # teacher e2, e3, e4
TEACHER_DEEP = "bottleneck"                       # teacher e5
STUDENT_FIRST = "enc_s1"                          # student e1
STUDENT_MIDDLE = ("enc_s2", "enc_s4", "enc_s8")   # student e2, e3, e4
TEACHER_DECODER = ("dec_s8", "dec_s4", "dec_s2")  # teacher d5, d4, d3
STUDENT_D5 = "dec_s8"                             # student d5
STUDENT_LATER = ("dec_s4", "dec_s2", "dec_s1")    # student d4, d3, d2

PAPER = {"alpha": 0.1, "beta": 0.9, "temperature": 4.0, "p": 4}
PRESETS = {"default": {**PAPER, "alpha": 0.16, "beta": 1.4}, "paper": PAPER}


def at_distance(s: torch.Tensor, t: torch.Tensor, p: float) -> torch.Tensor:
    """Sum over positions of the squared attention-map difference, mean over the batch."""
    return (at_map(s, p) - at_map(t, p)).pow(2).sum(dim=1).mean()


@register
class HLFD(DistillMethod):
    name = "hlfd"
    teacher_features = (*TEACHER_MIDDLE, TEACHER_DEEP, *TEACHER_DECODER, "logits")
    student_features = (STUDENT_FIRST, *STUDENT_MIDDLE, STUDENT_D5, *STUDENT_LATER)
    positive_options = ("temperature", "p")
    option_choices = {"preset": tuple(PRESETS)}

    @classmethod
    def option_defaults(cls) -> dict:
        return {"preset": "default", "alpha": None, "beta": None, "temperature": None, "p": None}

    def __init__(self, teacher_specs, student_specs, num_classes, **options):
        super().__init__(teacher_specs, student_specs, num_classes, **options)
        preset = self.options["preset"]
        self.options = {**self.options, **{k: v for k, v in PRESETS[preset].items() if self.options[k] is None}}
        self.require_features()
        self.unified_target = coarsest(self.feature("teacher", n) for n in TEACHER_DECODER)
        t_channels = sum(self.channels("teacher", n) for n in TEACHER_DECODER)
        self.unify = nn.Conv2d(self.channels("student", STUDENT_D5), t_channels, kernel_size=1)
        classes = self.channels("teacher", "logits")
        self.pmd = nn.ModuleDict({n: nn.Conv2d(self.channels("student", n), classes, kernel_size=1)
                                  for n in STUDENT_LATER})

    def flfd(self, teacher, student) -> torch.Tensor:
        """Feature-level feedback: attention transfer, unified and deep."""
        p = float(self.options["p"])
        middle = [self.feature("teacher", n) for n in TEACHER_MIDDLE]
        grid = coarsest(middle)
        unified = concat_on([teacher[n] for n in TEACHER_MIDDLE], middle, grid)
        first = at_distance(align(student[STUDENT_FIRST], self.feature("student", STUDENT_FIRST), grid), unified, p)
        deep = self.feature("teacher", TEACHER_DEEP)
        per_layer = sum(at_distance(align(student[n], self.feature("student", n), deep), teacher[TEACHER_DEEP], p)
                        for n in STUDENT_MIDDLE)
        return 0.5 * first + 0.5 * per_layer

    def plfd(self, teacher, student) -> torch.Tensor:
        """Prediction-level feedback: unified decoder KL and per-layer prediction maps."""
        temp = float(self.options["temperature"])
        decoder = [self.feature("teacher", n) for n in TEACHER_DECODER]
        target = concat_on([teacher[n] for n in TEACHER_DECODER], decoder, self.unified_target)
        projected = align(self.unify(student[STUDENT_D5]), self.feature("student", STUDENT_D5), self.unified_target)
        logits = teacher["logits"]
        per_layer = sum(kd_kl(self.align(self.pmd[n](student[n]), ("student", n), ("teacher", "logits")), logits, temp)
                        for n in STUDENT_LATER)
        return 0.5 * kd_kl(projected, target, temp) + 0.5 * per_layer

    def forward(self, teacher, student, target):
        return {"flfd": float(self.options["beta"]) * self.flfd(teacher, student),
                "plfd": float(self.options["alpha"]) * self.plfd(teacher, student)}
