"""``scratch``: no distillation; the student learns from the labels alone (the baseline)."""

from __future__ import annotations

from hkd.distill import register
from hkd.distill.base import DistillMethod


@register
class Scratch(DistillMethod):
    name = "scratch"

    def forward(self, teacher, student, target):
        return {}
