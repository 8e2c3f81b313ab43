"""``dist``: distillation from a stronger teacher by correlation (DIST; Huang et al., NeurIPS 2022).

Instead of matching the teacher's probabilities exactly (KL), DIST asks the student to rank the classes
as the teacher does: it matches relations, measured by the Pearson correlation ``rho``, of the softmax
outputs ``p = softmax(z / T)`` over the classes. For segmentation each pixel is an instance (the
paper's dense-prediction setting):

* inter-class: ``1 - rho(p_s[n, :], p_t[n, :])`` across the classes of each pixel ``n``, mean over the
  pixels of the batch;
* intra-class: ``1 - rho(p_s[:, c], p_t[:, c])`` across the pixels of the batch for each class ``c``,
  mean over the classes.

The terms are ``dist_inter = beta * T^2 * inter`` and ``dist_intra = gamma * T^2 * intra``; both are zero when
the student's logits equal the teacher's (and for any student whose outputs are an affine image of the
teacher's). Teacher and student logits both live on the input grid.

Options: ``temperature`` (default 1, the paper's ImageNet value), ``beta`` (default 5.2) and
``gamma`` (default 0.35), by the balance rule of
``benchmarks/grad_ratios.py``, measured on the runs' own logs, docs/methods.md: "Default weights"; earlier beta 50, gamma 3. The paper used beta = gamma = 1 (ImageNet).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hkd.distill import register
from hkd.distill.base import LogitsMethod

EPS = 1e-12
# Floor on the student's spread, as a share of the teacher's: a correlation divides by the spread, and a
# student whose outputs are flat (a zeroed head: its spread is rounding noise) would get gradients of 1e10 and
# more. Normalised as if its spread were SPREAD_FLOOR times the teacher's, it gets about 10x a normal
# gradient. An untrained SqueezeUNet's spreads (0.02 over the classes, 0.012 over the pixels, at their
# smallest) lie above the floor for a trained teacher's (at most 0.5), and above the floor the correlation
# is computed exactly as without it; equal outputs, however flat, still correlate exactly.
SPREAD_FLOOR = 0.01


def pearson(student: torch.Tensor, teacher: torch.Tensor, dim: int) -> torch.Tensor:
    """Pearson correlation of ``student`` and ``teacher`` along ``dim`` (0 where either is constant): the
    cosine of the centred vectors, each normalised on its own, the student's spread counted as at least
    :data:`SPREAD_FLOOR` times the teacher's (the gradient stays bounded as it vanishes)."""
    t = F.normalize(teacher - teacher.mean(dim, keepdim=True), dim=dim, eps=EPS)
    spread_t = (teacher - teacher.mean(dim, keepdim=True)).norm(2, dim, keepdim=True)
    s = student - student.mean(dim, keepdim=True)
    spread_s = torch.maximum(s.norm(2, dim, keepdim=True).clamp_min(EPS), SPREAD_FLOOR * spread_t)
    return (s / spread_s.expand_as(s) * t).sum(dim)


def relation_losses(student: torch.Tensor, teacher: torch.Tensor, temperature: float):
    """(inter, intra) of logits ``(B, C, H, W)``, each ``T^2 * (1 - mean correlation)``."""
    t = float(temperature)
    c = student.shape[1]
    p_s = F.softmax(student.float() / t, dim=1).movedim(1, -1).reshape(-1, c)  # (pixels, classes)
    p_t = F.softmax(teacher.float() / t, dim=1).movedim(1, -1).reshape(-1, c)
    inter = 1 - pearson(p_s, p_t, dim=1).mean()
    intra = 1 - pearson(p_s, p_t, dim=0).mean()
    return inter * t * t, intra * t * t


@register
class DIST(LogitsMethod):
    name = "dist"

    @classmethod
    def option_defaults(cls) -> dict:
        return {"temperature": 1.0, "beta": 5.2, "gamma": 0.35}

    def forward(self, teacher, student, target):
        s, t = self.logits(teacher, student)
        inter, intra = relation_losses(s, t, self.options["temperature"])
        return {"dist_inter": float(self.options["beta"]) * inter, "dist_intra": float(self.options["gamma"]) * intra}
