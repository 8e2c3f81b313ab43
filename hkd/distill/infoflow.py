"""``infoflow``: information flow between the images of a batch (Passalis et al., CVPR 2020, built on
probabilistic knowledge transfer, PKT: Passalis & Tefas, ECCV 2018).

At each chosen depth a model describes the batch by how similar its images are to one another, and the
student learns to describe the batch as the teacher does at the same depth; the description does not
depend on the layer's width or grid, so the two models are compared without a projector. For a layer
pair, each image ``i`` of the batch becomes one vector ``v_i`` (its map flattened, ``pool: flatten``, or
averaged over the positions, ``pool: mean``); the cosine similarities are mapped to [0, 1] and each row
normalised into the conditional distribution of image ``j`` given image ``i``::

    k_ij = (cos(v_i, v_j) + 1) / 2,        P_ij = k_ij / sum_j k_ij

(the image itself included, as in PKT). The term is ``weight * mean over pairs of mean_i KL(P^t_i || P^s_i)``;
zero when the student's maps equal the teacher's or are any positive scaling of them. A batch of one image
has nothing to relate and gives zero.

Options: ``weight`` (default 320, by the balance rule of
``benchmarks/grad_ratios.py``, measured on the runs' own logs, docs/methods.md: "Default weights"; earlier 190, 70, 300;
decoder stages 1 and 2 stay below 0.1x, only ``dec_s4`` reaches them), ``pool`` (``flatten``, default: the
spatial layout counts; ``mean``) and ``layers``: pairs
``"student:teacher"`` (or one name for the same feature on both sides). The default follows the flow
through the network at four depths that both models have, at equal strides: ``enc_s4``, ``enc_s8``,
``bottleneck`` (the teacher's ViT output after ``conv_more``) and ``dec_s4``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hkd.distill import register
from hkd.distill.base import LayerPairsMethod

DEFAULT_LAYERS = ("enc_s4", "enc_s8", "bottleneck", "dec_s4")
EPS = 1e-7


def conditional_similarities(x: torch.Tensor, pool: str) -> torch.Tensor:
    """(B, C, h, w) -> (B, B): row ``i`` the distribution over the batch of the similarity to image ``i``."""
    v = x.float().mean(dim=(2, 3)) if pool == "mean" else x.float().flatten(1)
    v = F.normalize(v, dim=1)
    k = (v @ v.t() + 1) / 2
    return k / k.sum(dim=1, keepdim=True)


def flow_divergence(student: torch.Tensor, teacher: torch.Tensor, pool: str) -> torch.Tensor:
    """Mean over the images of ``KL(P^t_i || P^s_i)`` between the two batches' conditional similarities."""
    p_t = conditional_similarities(teacher, pool)
    p_s = conditional_similarities(student, pool)
    return (p_t * (torch.log(p_t + EPS) - torch.log(p_s + EPS))).sum(dim=1).mean()


@register
class InformationFlow(LayerPairsMethod):
    name = "infoflow"
    teacher_features = DEFAULT_LAYERS
    student_features = DEFAULT_LAYERS
    option_choices = {"pool": ("flatten", "mean")}
    min_batch_size = 2  # one image has nothing to relate: the term is 0

    @classmethod
    def option_defaults(cls) -> dict:
        return {"weight": 320, "pool": "flatten", "layers": list(DEFAULT_LAYERS)}

    def forward(self, teacher, student, target):
        pool = self.options["pool"]
        total = sum(flow_divergence(student[s], teacher[t], pool) for s, t in self.pairs)
        return {"infoflow": float(self.options["weight"]) * total / len(self.pairs)}
