"""``logits``: Hinton-style knowledge distillation on the segmentation logits (hypothesis 1).

The run's loss is ``(1 - alpha) * segmentation + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``
(Hinton et al. 2015), the KL taken per pixel over the class axis and averaged over pixels and batch.
Teacher and student logits both live on the input grid, so no resampling is involved.

Options: ``temperature`` T (default 4.0, the usual choice for dense prediction and the value HLFD and
CWD use; the study's value is not public) and ``alpha`` (default 0.1, the share of the distillation
term; the segmentation loss keeps ``1 - alpha``). At T = 4 the KL term's gradient is about 5x the
segmentation loss's at alpha 0.5 already at initialisation, and grows as the student learns the labels;
alpha 0.1 keeps it within 0.1x-10x over training on the embedded default study
(``benchmarks/grad_ratios.py``).
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
        return {"temperature": 4.0, "alpha": 0.1}

    @property
    def segmentation_weight(self) -> float:
        return 1.0 - float(self.options["alpha"])

    def forward(self, teacher, student, target):
        s, t = self.logits(teacher, student)
        loss = kd_kl(s, t, self.options["temperature"], dim=1)
        return {"kd_logits": float(self.options["alpha"]) * loss}
