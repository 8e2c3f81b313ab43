"""``cka``: latent alignment by centred kernel alignment (linear CKA; Kornblith et al., ICML 2019, used as a
distillation loss e.g. by Saha et al., BMVC 2022).

Linear CKA compares two representations of the same samples by the similarity of their Gram matrices; it
is invariant to rotations and isotropic scaling of either side and does not need the two widths to agree,
so no projector is trained. Here the samples are the positions of the batch: for each matched
(student, teacher) layer pair, both maps are put on the coarser of the two grids (the finer one is averaged
down onto it with :func:`~hkd.distill.functional.align`), every cell of every image is one sample, and its
channels are its features. With ``X`` (teacher) and ``Y`` (student) the ``(B*h*w, C)`` matrices with their
column means removed::

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F * ||Y^T Y||_F)

computed in the feature spaces (``C x C`` matrices), so its cost grows linearly with the number of positions.
The term is ``weight * mean over the pairs of (1 - CKA)``: zero when the student's map equals the teacher's
(or is any rotation or scaling of it).

Options: ``weight`` (default 1.3, by the balance rule of
``benchmarks/grad_ratios.py``, measured on the runs' own logs, docs/methods.md: "Default weights"; earlier 7; the term never
reaches the decoder or the head)
and ``layers``: pairs ``"student:teacher"``
(or one name for the same feature on both sides); default ``enc_s4``, ``enc_s8`` and ``bottleneck``, the
maps of equal stride both models have from the first ResNet block of the teacher on.
"""

from __future__ import annotations

import math

import torch

from hkd.distill import register
from hkd.distill.base import LayerPairsMethod

DEFAULT_LAYERS = ("enc_s4", "enc_s8", "bottleneck")
EPS = 1e-12
# Floor on the student's spread, as a share of the teacher's: CKA divides by each map's spread, and a
# student map that is flat (rounding noise around a constant) would get gradients growing as 1 / spread (8e3
# at a spread of 1e-6 against 7e-3 at 1, for a teacher's of 1). Counted as at least SPREAD_FLOOR times the
# teacher's, the student's spread keeps them bounded (below 1 there); above the floor CKA is computed exactly
# as without it.
SPREAD_FLOOR = 0.01


def positions(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B*h*w, C) in float32, one row per position, columns centred."""
    rows = x.float().movedim(1, -1).reshape(-1, x.shape[1])
    return rows - rows.mean(dim=0, keepdim=True)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA of two column-centred sample matrices, the teacher's ``(n, p)`` and the student's ``(n, q)``;
    ``||Y^T Y||`` counts as at least its value for columns of :data:`SPREAD_FLOOR` times the teacher's mean
    spread (``||X^T X|| ~ n * var * sqrt(p)`` for uncorrelated columns)."""
    cross = (y.t() @ x).pow(2).sum()
    gram_x = (x.t() @ x).norm()
    floor = SPREAD_FLOOR ** 2 * gram_x * math.sqrt(y.shape[1] / x.shape[1])
    return cross / (gram_x * torch.maximum((y.t() @ y).norm(), floor) + EPS)


@register
class LinearCKA(LayerPairsMethod):
    name = "cka"
    teacher_features = DEFAULT_LAYERS
    student_features = DEFAULT_LAYERS

    @classmethod
    def option_defaults(cls) -> dict:
        return {"weight": 1.3, "layers": list(DEFAULT_LAYERS)}

    def forward(self, teacher, student, target):
        total = 0.0
        for s_name, t_name in self.pairs:
            s, t = self.on_coarser_grid(s_name, t_name, student[s_name], teacher[t_name])
            total = total + (1 - linear_cka(positions(t), positions(s)))
        return {"cka": float(self.options["weight"]) * total / len(self.pairs)}
