"""``logits``: Hinton-style knowledge distillation on the segmentation logits (hypothesis 1).

The run's loss is ``(1 - alpha) * segmentation + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``
(Hinton et al. 2015), the KL taken per pixel over the class axis and averaged over pixels and batch.
Teacher and student logits both live on the input grid, so no resampling is involved.

Options: ``temperature`` T (default 4.0, the usual choice for dense prediction and the value HLFD and
CWD use; the study's value is not public) and ``alpha`` (default 0.0038, the share of the distillation
term; the segmentation loss keeps ``1 - alpha``; by the balance rule of ``benchmarks/grad_ratios.py``: the
weight at which the term's median gradient ratio over the student blocks it reaches is 1x, geometric mean over
widths 0.4M and 1.5, lowered where a block would pass 10x; measured on the default study's trained scratch
students, seed 0, ``--trained``, counting the segmentation loss's ``1 - alpha``:
1x at 0.0048 (0.4M) and 0.003 (x1.5), no block above 10x up to 0.022; at 0.0038 the medians read 0.79x and
1.3x, the largest block 1.7x (bottleneck, x1.5); earlier 0.1).
"""

from __future__ import annotations

from hkd.distill import register
from hkd.distill.base import LogitsMethod
from hkd.distill.functional import kd_kl


@register
class LogitsKD(LogitsMethod):
    name = "logits"
    upper_bounds = {"alpha": 1.0}  # the share of the distillation term: the segmentation loss keeps 1 - alpha

    @classmethod
    def option_defaults(cls) -> dict:
        return {"temperature": 4.0, "alpha": 0.0038}

    @property
    def segmentation_weight(self) -> float:
        return 1.0 - float(self.options["alpha"])

    def forward(self, teacher, student, target):
        s, t = self.logits(teacher, student)
        loss = kd_kl(s, t, self.options["temperature"], dim=1)
        return {"kd_logits": float(self.options["alpha"]) * loss}
