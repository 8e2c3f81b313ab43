"""``cwd``: channel-wise distillation on the logits (Shu et al., ICCV 2021).

Each class channel becomes a distribution over the pixels, ``phi(y_c) = softmax over H*W of y_c/tau``;
the term is ``weight * tau^2 / (N*C) * sum_{n,c} KL(phi(y_t,nc) || phi(y_s,nc))``. Teacher and student
logits both live on the input grid.

Options: ``temperature`` (tau, default 4.0), ``weight`` (default 0.26, by the balance rule of
``benchmarks/grad_ratios.py``, measured on the runs' own logs, docs/methods.md: "Default weights"; earlier 0.13, 1; the paper's 3 was tuned
for 19-class street scenes).
"""

from __future__ import annotations

from hkd.distill import register
from hkd.distill.base import LogitsMethod
from hkd.distill.functional import kd_kl


@register
class ChannelWise(LogitsMethod):
    name = "cwd"

    @classmethod
    def option_defaults(cls) -> dict:
        return {"temperature": 4.0, "weight": 0.26}

    def forward(self, teacher, student, target):
        s, t = self.logits(teacher, student)
        # (N, C, H*W): softmax over the pixels of each channel; kd_kl averages over the N*C channels.
        loss = kd_kl(s.flatten(2), t.flatten(2), self.options["temperature"], dim=-1)
        return {"cwd": float(self.options["weight"]) * loss}
