"""``cwd``: channel-wise distillation on the logits (Shu et al., ICCV 2021).

Each class channel becomes a distribution over the pixels, ``phi(y_c) = softmax over H*W of y_c/tau``;
the term is ``weight * tau^2 / (N*C) * sum_{n,c} KL(phi(y_t,nc) || phi(y_s,nc))``. Teacher and student
logits both live on the input grid.

Options: ``temperature`` (tau, default 4.0), ``weight`` (default 20: at weight 1 the term's gradient is
about 1/60 of the segmentation loss's; 20 keeps it within 0.1x-10x over training on the embedded default
study, ``benchmarks/grad_ratios.py``; the paper's 3 was tuned for 19-class street scenes).
"""

from __future__ import annotations

from hkd.distill import register
from hkd.distill.base import DistillMethod
from hkd.distill.functional import kd_kl


@register
class ChannelWise(DistillMethod):
    name = "cwd"
    teacher_features = ("logits",)
    student_features = ("logits",)

    @classmethod
    def option_defaults(cls) -> dict:
        return {"temperature": 4.0, "weight": 1.0}

    def __init__(self, teacher_specs, student_specs, num_classes, **options):
        super().__init__(teacher_specs, student_specs, num_classes, **options)
        self.require_matching_classes()
        self.require_positive("temperature")

    def forward(self, teacher, student, target):
        s = student["logits"]
        t = self.align(teacher["logits"], ("teacher", "logits"), ("student", "logits"))
        # (N, C, H*W): softmax over the pixels of each channel; kd_kl averages over the N*C channels.
        loss = kd_kl(s.flatten(2), t.flatten(2), self.options["temperature"], dim=-1)
        return {"cwd": float(self.options["weight"]) * loss}
