"""``logits``: Hinton-style knowledge distillation on the segmentation logits (hypothesis 1).

The run's loss is ``(1 - alpha) * segmentation + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``
(Hinton et al. 2015), the KL taken per pixel over the class axis and averaged over pixels and batch.
Teacher and student logits both live on the input grid, so no resampling is involved.

Options: ``temperature`` T (default 4.0, the usual choice for dense prediction and the value HLFD and
CWD use; the study's value is not public) and ``alpha`` (default 0.1, the share of the distillation
term; the segmentation loss keeps ``1 - alpha``). By the balance rule of ``benchmarks/grad_ratios.py``, from
the default study's 3 seeds of logs after the warm-up (``--logs``): median ratio over the blocks it reaches
0.64x at both widths (balance 0.15), largest block 0.91x (dec4, 0.4M); kept, within 0.5x-2x.
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
