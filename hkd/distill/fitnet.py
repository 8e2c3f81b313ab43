"""``fitnet``: FitNets hint learning (Romero et al., ICLR 2015).

``weight * 0.5 * mean((u_t - align(r(v_s)))^2)`` between the teacher's hint layer ``u_t`` and the
student's guided layer ``v_s`` through a trainable regressor ``r`` on the student side (1x1 conv + batch
norm, student channels -> teacher channels); ``align`` moves the regressed map onto the teacher's grid.

Options: ``weight`` (default 75, by the balance rule of
``benchmarks/grad_ratios.py``, measured on the runs' own logs, docs/methods.md: "Default weights"; earlier 34, 5), ``layer`` (default ``bottleneck``;
``"student:teacher"`` for
different names, e.g. ``bottleneck:vit``).
"""

from __future__ import annotations

from torch import nn

from hkd.distill import register
from hkd.distill.base import DistillMethod
from hkd.distill.functional import parse_pair


@register
class FitNet(DistillMethod):
    name = "fitnet"
    teacher_features = ("bottleneck",)
    student_features = ("bottleneck",)

    @classmethod
    def option_defaults(cls) -> dict:
        return {"weight": 75, "layer": "bottleneck"}

    @classmethod
    def required_teacher_features(cls, options: dict) -> tuple[str, ...]:
        return (parse_pair(options.get("layer", cls.option_defaults()["layer"]))[1],)

    def __init__(self, teacher_specs, student_specs, num_classes, **options):
        super().__init__(teacher_specs, student_specs, num_classes, **options)
        self.s_name, self.t_name = parse_pair(self.options["layer"])
        self.student_features = (self.s_name,)
        self.teacher_features = (self.t_name,)
        cs, ct = self.channels("student", self.s_name), self.channels("teacher", self.t_name)
        self.regressor = nn.Sequential(nn.Conv2d(cs, ct, kernel_size=1, bias=False), nn.BatchNorm2d(ct))

    def forward(self, teacher, student, target):
        t = teacher[self.t_name]
        s = self.align(self.regressor(student[self.s_name]), ("student", self.s_name), ("teacher", self.t_name))
        return {"fitnet": float(self.options["weight"]) * 0.5 * (t - s).pow(2).mean()}
