"""``fitnet``: FitNets hint learning (Romero et al., ICLR 2015).

``weight * 0.5 * mean((u_t - r(v_s))^2)`` between the teacher's hint layer ``u_t`` and the student's
guided layer ``v_s`` through a trainable regressor ``r`` (1x1 conv + batch norm, student channels ->
teacher channels); the regressed map is resized bilinearly to the teacher's size when they differ.

Options: ``weight`` (default 1.0), ``layer`` (default ``latent``; ``"student:teacher"`` for
different names, e.g. ``latent:vit``).
"""

from __future__ import annotations

from torch import nn

from hkd.distill import register
from hkd.distill.base import DistillMethod
from hkd.distill.functional import parse_pair, resize


@register
class FitNet(DistillMethod):
    name = "fitnet"
    teacher_features = ("latent",)
    student_features = ("latent",)

    @classmethod
    def option_defaults(cls) -> dict:
        return {"weight": 1.0, "layer": "latent"}

    @classmethod
    def required_teacher_features(cls, options: dict) -> tuple[str, ...]:
        return (parse_pair(options.get("layer", cls.option_defaults()["layer"]))[1],)

    def __init__(self, teacher_shapes, student_shapes, num_classes, **options):
        super().__init__(teacher_shapes, student_shapes, num_classes, **options)
        self.s_name, self.t_name = parse_pair(self.options["layer"])
        self.student_features = (self.s_name,)
        self.teacher_features = (self.t_name,)
        cs = self.feature_shape("student", self.s_name)[0]
        ct = self.feature_shape("teacher", self.t_name)[0]
        self.regressor = nn.Sequential(nn.Conv2d(cs, ct, kernel_size=1, bias=False), nn.BatchNorm2d(ct))

    def forward(self, teacher, student, target):
        t = teacher[self.t_name]
        s = resize(self.regressor(student[self.s_name]), t.shape[-2:])
        return {"fitnet": float(self.options["weight"]) * 0.5 * (t - s).pow(2).mean()}
