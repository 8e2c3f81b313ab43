"""``hlfd``: Hierarchical Layer-selective Feedback Distillation (Gorade et al., ISBI 2024).

``L_extra = alpha * PLFD + beta * FLFD`` (returned as the terms ``plfd`` and ``flfd``)::

    FLFD = 0.5 * AT_u(s_e1 <- [t_e2, t_e3, t_e4]) + 0.5 * sum_{k=2,3,4} AT(s_ek, t_e5)
    PLFD = 0.5 * KL_u(s_d5 <- [t_d5, t_d4, t_d3]) + 0.5 * sum_{k=4,3,2} PMD(s_dk, t_logits)

* ``AT(s, t)``: attention maps ``a = L2-normalise(flatten(mean_c x^p))`` (p = 4); the student map is
  resized to the teacher's; ``sum over positions of (a_s - a_t)^2``, mean over the batch.
* ``AT_u``: the teacher maps are resized to the smallest of them, concatenated on channels and
  resized to the student's size (no projector: attention maps are channel-free).
* ``KL_u``: the teacher maps are resized to the smallest, concatenated, mapped to the student's
  channel count by a trained 1x1 conv and resized to the student's size; then
  ``T^2 * KL(softmax(t/T) || softmax(s/T))`` over channels per pixel, mean over pixels and batch.
* ``PMD(s, t_logits)``: a trained 1x1 conv maps the student layer to the classes, bilinear resize to
  the logits' size, the same per-pixel KL over classes.

Every 1x1 conv is a registered sub-module, so it is optimised and checkpointed with the student.

Layer mapping. The original networks return ``(e1..e5, d5, d4, d3, d2, out)``: ``e1..e5`` the encoder
stages from shallow to deep and ``d5..d2`` the decoder stages in execution order, ``d5`` being the
first, coarsest decoder block right after the bottleneck and ``d2`` the last, finest one. The same
roles are kept here, stage by stage:

========  ============================  ==============================
original  student SqueezeUNet           teacher TransUNet
========  ============================  ==============================
e1        ``enc1`` (S)                  (unused)
e2..e4    ``enc2..enc4`` (S/2..S/8)     ``enc2``, ``enc3``, ``enc4`` (ResNet stages, S/4..S/16)
e5        (unused)                      ``latent`` (S/16, ViT output after ``conv_more``)
d5        ``dec4`` (S/8)                ``dec4`` (S/8)
d4, d3    ``dec3``, ``dec2``            ``dec3``, ``dec2``
d2        ``dec1`` (S)                  (unused)
out       ``logits``                    ``logits``
========  ============================  ==============================

So the student's shallowest encoder stage is fed back the teacher's whole CNN hierarchy; its deeper
encoder stages each match the teacher's deepest spatial representation, the one that carries the
transformer's global context (the same map the ``latent`` method uses); the student's first decoder
block learns from the teacher's first three decoder blocks; and the student's later decoder blocks
each predict the teacher's class maps.

Options: ``alpha`` 0.1, ``beta`` 0.9, ``temperature`` 4.0, ``p`` 4 (attention exponent).
"""

from __future__ import annotations

import torch
from torch import nn

from hkd.distill import register
from hkd.distill.base import DistillMethod
from hkd.distill.functional import at_map, concat_at_smallest, kd_kl, resize

TEACHER_MIDDLE = ("enc2", "enc3", "enc4")   # teacher e2, e3, e4
TEACHER_DEEP = "latent"                     # teacher e5
STUDENT_FIRST = "enc1"                      # student e1
STUDENT_MIDDLE = ("enc2", "enc3", "enc4")   # student e2, e3, e4
TEACHER_DECODER = ("dec4", "dec3", "dec2")  # teacher d5, d4, d3
STUDENT_D5 = "dec4"                         # student d5
STUDENT_LATER = ("dec3", "dec2", "dec1")    # student d4, d3, d2


def at_distance(s: torch.Tensor, t: torch.Tensor, p: float) -> torch.Tensor:
    """Sum over positions of the squared attention-map difference, mean over the batch."""
    return (at_map(s, p) - at_map(t, p)).pow(2).sum(dim=1).mean()


@register
class HLFD(DistillMethod):
    name = "hlfd"
    teacher_features = (*TEACHER_MIDDLE, TEACHER_DEEP, *TEACHER_DECODER, "logits")
    student_features = (STUDENT_FIRST, *STUDENT_MIDDLE, STUDENT_D5, *STUDENT_LATER)

    @classmethod
    def option_defaults(cls) -> dict:
        return {"alpha": 0.1, "beta": 0.9, "temperature": 4.0, "p": 4}

    def __init__(self, teacher_shapes, student_shapes, num_classes, **options):
        super().__init__(teacher_shapes, student_shapes, num_classes, **options)
        self.require_positive("temperature", "p")
        for n in self.teacher_features:
            self.feature_shape("teacher", n)
        for n in self.student_features:
            self.feature_shape("student", n)
        t_dec_channels = sum(self.feature_shape("teacher", n)[0] for n in TEACHER_DECODER)
        self.unify = nn.Conv2d(t_dec_channels, self.feature_shape("student", STUDENT_D5)[0], kernel_size=1)
        classes = self.feature_shape("teacher", "logits")[0]
        self.pmd = nn.ModuleDict({n: nn.Conv2d(self.feature_shape("student", n)[0], classes, kernel_size=1)
                                  for n in STUDENT_LATER})

    def flfd(self, teacher, student) -> torch.Tensor:
        """Feature-level feedback: attention transfer, unified and deep."""
        p = float(self.options["p"])
        s1 = student[STUDENT_FIRST]
        unified = resize(concat_at_smallest([teacher[n] for n in TEACHER_MIDDLE]), s1.shape[-2:])
        deep = teacher[TEACHER_DEEP]
        per_layer = sum(at_distance(resize(student[n], deep.shape[-2:]), deep, p) for n in STUDENT_MIDDLE)
        return 0.5 * at_distance(s1, unified, p) + 0.5 * per_layer

    def plfd(self, teacher, student) -> torch.Tensor:
        """Prediction-level feedback: unified decoder KL and per-layer prediction maps."""
        temp = float(self.options["temperature"])
        sd5 = student[STUDENT_D5]
        unified = resize(self.unify(concat_at_smallest([teacher[n] for n in TEACHER_DECODER])), sd5.shape[-2:])
        logits = teacher["logits"]
        per_layer = sum(kd_kl(resize(self.pmd[n](student[n]), logits.shape[-2:]), logits, temp)
                        for n in STUDENT_LATER)
        return 0.5 * kd_kl(sd5, unified, temp) + 0.5 * per_layer

    def forward(self, teacher, student, target):
        return {"flfd": float(self.options["beta"]) * self.flfd(teacher, student),
                "plfd": float(self.options["alpha"]) * self.plfd(teacher, student)}
