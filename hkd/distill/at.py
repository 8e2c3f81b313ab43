"""``at``: attention transfer (Zagoruyko & Komodakis, ICLR 2017), the feature-map baseline.

For each matched (student, teacher) layer pair, attention maps ``a = L2-normalise(flatten(mean_c x^p))``
with p = 2 are compared on the coarser of the two grids (the finer map is averaged down onto it with
:func:`~hkd.distill.functional.align`); the term is ``weight / 2 * sum_pairs mean((a_s - a_t)^2)``
(mean over batch and positions); ``weight`` plays the paper's beta, with its beta/2 factor.

Options: ``weight`` (default 43, by the balance rule of
``benchmarks/grad_ratios.py``, measured on the runs' own logs, docs/methods.md: "Default weights"; earlier 22, 50; the paper's 1000 gives the term about
10x the segmentation loss's gradient already at initialisation), ``p`` (default 2), ``layers``: pairs
``"student:teacher"`` (or one
name for the same feature on both sides). The default pairs the maps of equal stride that both models
have: ``enc_s2``, ``enc_s4``, ``enc_s8`` and ``bottleneck`` (stride 16).
"""

from __future__ import annotations

from hkd.distill import register
from hkd.distill.base import LayerPairsMethod
from hkd.distill.functional import at_map

DEFAULT_LAYERS = ("enc_s2", "enc_s4", "enc_s8", "bottleneck")


@register
class AttentionTransfer(LayerPairsMethod):
    name = "at"
    teacher_features = DEFAULT_LAYERS
    student_features = DEFAULT_LAYERS
    positive_options = ("p",)

    @classmethod
    def option_defaults(cls) -> dict:
        return {"weight": 43, "p": 2, "layers": list(DEFAULT_LAYERS)}

    def forward(self, teacher, student, target):
        p = float(self.options["p"])
        total = 0.0
        for s_name, t_name in self.pairs:
            s, t = self.on_coarser_grid(s_name, t_name, student[s_name], teacher[t_name])
            total = total + (at_map(s, p) - at_map(t, p)).pow(2).mean()
        return {"at": float(self.options["weight"]) / 2 * total}
