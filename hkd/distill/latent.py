"""``latent``: L1 matching of the bottleneck maps (hypothesis 2).

``weight * mean|t - P(s)|`` between the teacher's ``latent`` (TransUNet DecoderCup ``conv_more``
output) and the student's ``latent`` (SqueezeUNet bottleneck). ``P`` is a trainable 1x1 conv
(student channels -> teacher channels) followed by a bilinear resize to the teacher's grid when the
spatial sizes differ.

Options: ``weight`` (default 1.0); ``project``: ``auto`` (default; a projector only when the channel
counts differ, so width 1 matches the study, which had none), ``always`` or ``never`` (channel counts
must then agree).
"""

from __future__ import annotations

from torch import nn

from hkd.distill import register
from hkd.distill.base import DistillMethod
from hkd.distill.functional import resize


@register
class LatentL1(DistillMethod):
    name = "latent"
    teacher_features = ("latent",)
    student_features = ("latent",)

    @classmethod
    def option_defaults(cls) -> dict:
        return {"weight": 1.0, "project": "auto"}

    def __init__(self, teacher_shapes, student_shapes, num_classes, **options):
        super().__init__(teacher_shapes, student_shapes, num_classes, **options)
        ct = self.feature_shape("teacher", "latent")[0]
        cs = self.feature_shape("student", "latent")[0]
        mode = self.options["project"]
        if mode not in ("auto", "always", "never"):
            raise ValueError(f"distillation method 'latent': project must be auto|always|never, got {mode!r}")
        if mode == "never" and ct != cs:
            raise ValueError(f"distillation method 'latent': project='never' but the teacher latent has "
                             f"{ct} channels and the student's {cs}")
        use = mode == "always" or (mode == "auto" and ct != cs)
        self.projector = nn.Conv2d(cs, ct, kernel_size=1) if use else nn.Identity()

    def forward(self, teacher, student, target):
        t = teacher["latent"]
        s = resize(self.projector(student["latent"]), t.shape[-2:])
        return {"latent_l1": float(self.options["weight"]) * (t - s).abs().mean()}
