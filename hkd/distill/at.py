"""``at``: attention transfer (Zagoruyko & Komodakis, ICLR 2017), the feature-map baseline.

For each matched (student, teacher) layer pair, attention maps ``a = L2-normalise(flatten(mean_c x^p))``
with p = 2, the student map resized to the teacher's size first; the term is
``weight / 2 * sum_pairs mean((a_s - a_t)^2)`` (mean over batch and positions). ``weight`` is the
paper's beta = 1000 with its beta/2 factor.

Options: ``weight`` (default 1000), ``p`` (default 2), ``layers``: pairs ``"student:teacher"`` (or one
name for the same feature on both sides). The default pairs the stages at equal resolution:
``enc2:enc1`` (S/2), ``enc3:enc2`` (S/4), ``enc4:enc3`` (S/8) and ``latent`` (S/16); TransUNet's stem
halves the resolution before its first stage, so equal names would sit at different scales.
"""

from __future__ import annotations

from hkd.distill import register
from hkd.distill.base import DistillMethod
from hkd.distill.functional import as_name_list, at_map, parse_pair, resize

DEFAULT_LAYERS = ("enc2:enc1", "enc3:enc2", "enc4:enc3", "latent")


@register
class AttentionTransfer(DistillMethod):
    name = "at"
    teacher_features = ("enc1", "enc2", "enc3", "latent")
    student_features = ("enc2", "enc3", "enc4", "latent")

    @classmethod
    def option_defaults(cls) -> dict:
        return {"weight": 1000.0, "p": 2, "layers": list(DEFAULT_LAYERS)}

    @classmethod
    def required_teacher_features(cls, options: dict) -> tuple[str, ...]:
        layers = options.get("layers", cls.option_defaults()["layers"])
        return tuple(dict.fromkeys(parse_pair(spec)[1] for spec in as_name_list(layers)))

    def __init__(self, teacher_shapes, student_shapes, num_classes, **options):
        super().__init__(teacher_shapes, student_shapes, num_classes, **options)
        self.pairs = [parse_pair(spec) for spec in as_name_list(self.options["layers"])]
        if not self.pairs:
            raise ValueError("distillation method 'at': no layers given")
        for s, t in self.pairs:
            self.feature_shape("student", s)
            self.feature_shape("teacher", t)
        self.student_features = tuple(dict.fromkeys(s for s, _ in self.pairs))
        self.teacher_features = tuple(dict.fromkeys(t for _, t in self.pairs))

    def forward(self, teacher, student, target):
        p = float(self.options["p"])
        total = 0.0
        for s_name, t_name in self.pairs:
            t = teacher[t_name]
            a_s = at_map(resize(student[s_name], t.shape[-2:]), p)
            total = total + (a_s - at_map(t, p)).pow(2).mean()
        return {"at": float(self.options["weight"]) / 2 * total}
