"""``dkd``: decoupled knowledge distillation (Zhao et al., CVPR 2022), per pixel.

The Hinton KL on the logits splits into a target-class part and a non-target-class part, weighted
separately. At each pixel, with ``p = softmax(z / T)`` over the classes and ``g`` the labelled class:

* TCKD: ``KL(b_t || b_s)`` between the binary distributions ``b = (p_g, 1 - p_g)`` (target vs the rest);
* NCKD: ``KL(q_t || q_s)`` between the distributions over the non-target classes,
  ``q = softmax over c != g of z_c / T``.

Each is multiplied by ``T^2`` and averaged over pixels and batch; the terms are ``dkd_tc = alpha * TCKD`` and
``dkd_nc = beta * NCKD``. Both are zero when the student's logits equal the teacher's. Teacher and student
logits both live on the input grid; the labels are the label map of the batch, and pixels without a
label (outside a rotated slice) count in neither term.

Options: ``temperature`` T (default 4, the paper's and the value ``logits`` uses), ``alpha`` (default
0.18) and ``beta`` (default 0.38), by the balance rule of
``benchmarks/grad_ratios.py``, measured on the runs' own logs, docs/methods.md: "Default weights"; earlier alpha 0.084, beta 0.17; alpha 1.5, beta 1.5. The paper's alpha 1, beta 8 is its CIFAR-100 setting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hkd.distill import register
from hkd.distill.base import LogitsMethod
from hkd.distill.functional import one_hot


def decoupled_kl(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                 temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD) of logits ``(B, C, H, W)`` against labels ``(B, H, W)``, each ``T^2`` times the
    per-pixel KL, mean over the labelled pixels of the batch (unlabelled ones have no target class)."""
    t = float(temperature)
    gt = one_hot(labels, student.shape[1]).bool()
    valid = gt.any(dim=1)
    n = valid.sum().clamp(min=1)
    log_s = F.log_softmax(student.float() / t, dim=1)
    log_t = F.log_softmax(teacher.float() / t, dim=1)
    # binary (target, rest) distributions, in log space: log p_g and log(1 - p_g) = logsumexp over c != g
    neg = torch.finfo(torch.float32).min
    bin_s = torch.stack([log_s.masked_fill(~gt, neg).logsumexp(1), log_s.masked_fill(gt, neg).logsumexp(1)], 1)
    bin_t = torch.stack([log_t.masked_fill(~gt, neg).logsumexp(1), log_t.masked_fill(gt, neg).logsumexp(1)], 1)
    tckd = ((bin_t.exp() * (bin_t - bin_s)).sum(1) * valid).sum() / n
    # distributions over the non-target classes: the target class removed before the softmax
    nt_s = F.log_softmax((student.float() / t).masked_fill(gt, neg), dim=1)
    nt_t = F.log_softmax((teacher.float() / t).masked_fill(gt, neg), dim=1)
    nckd = ((nt_t.exp() * (nt_t - nt_s)).masked_fill(gt, 0.0).sum(1) * valid).sum() / n
    return tckd * t * t, nckd * t * t


@register
class DecoupledKD(LogitsMethod):
    name = "dkd"

    @classmethod
    def option_defaults(cls) -> dict:
        return {"temperature": 4.0, "alpha": 0.18, "beta": 0.38}

    def forward(self, teacher, student, target):
        s, t = self.logits(teacher, student)
        tckd, nckd = decoupled_kl(s, t, target, self.options["temperature"])
        return {"dkd_tc": float(self.options["alpha"]) * tckd, "dkd_nc": float(self.options["beta"]) * nckd}
