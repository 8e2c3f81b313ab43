"""``logits``: Hinton-style knowledge distillation on the segmentation logits (hypothesis 1).

Per pixel, ``weight * T^2 * KL(softmax(t/T) || softmax(s/T))`` with the softmax over the class
axis (dim 1), averaged over pixels and batch. Teacher logits of another spatial size are resized
bilinearly to the student's.

Options: ``temperature`` (default 4.0, the usual choice for dense prediction and the value HLFD and
CWD use; the study's value is not public) and ``weight`` (default 1.0).
"""

from __future__ import annotations

from hkd.distill import register
from hkd.distill.base import DistillMethod
from hkd.distill.functional import kd_kl, resize


@register
class LogitsKD(DistillMethod):
    name = "logits"
    teacher_features = ("logits",)
    student_features = ("logits",)

    @classmethod
    def option_defaults(cls) -> dict:
        return {"temperature": 4.0, "weight": 1.0}

    def __init__(self, teacher_shapes, student_shapes, num_classes, **options):
        super().__init__(teacher_shapes, student_shapes, num_classes, **options)
        self.require_matching_classes()
        self.require_positive("temperature")

    def forward(self, teacher, student, target):
        s = student["logits"]
        t = resize(teacher["logits"], s.shape[-2:])
        loss = kd_kl(s, t, self.options["temperature"], dim=1)
        return {"kd_logits": float(self.options["weight"]) * loss}
