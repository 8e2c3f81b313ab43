"""Measuring the gradient balance of a run's loss terms, per block of the student (what
:mod:`hkd.train.gradient_balance` reads back from ``log.csv``).

A run probes the first :data:`PROBE_BATCHES` batches of every epoch: one gradient per loss term, at its
configured weight, over the student's parameters and the method's adapters, whose squared norms are summed
per block (:class:`GradientProbe`).
"""

from __future__ import annotations

import math

import torch

from hkd.models import model_blocks
from hkd.train.gradient_balance import ADAPTER, SEG, column

PROBE_BATCHES = 2  # first batches of each epoch whose per-term gradient norms are measured and averaged


class GradientProbe:
    """The parameters whose gradients are probed and the block each belongs to: the student's blocks
    (:func:`hkd.models.model_blocks`), then the method's adapters, one block per top-level sub-module
    (``adapter.<name>``).

    ``blocks`` lists the block names (the student's first, ``student`` of them), ``params`` the probed
    parameters and ``owner`` the index in ``blocks`` of each parameter's block.
    """

    def __init__(self, model: torch.nn.Module, spec: dict, method: torch.nn.Module, device: torch.device):
        self.method = method
        names, params, owner = [], [], []
        for block, block_params in model_blocks(model, spec).items():
            names.append(block)
            for p in block_params:
                if p.requires_grad:
                    params.append(p)
                    owner.append(len(names) - 1)
        student = len(names)
        for pname, p in method.named_parameters():
            if not p.requires_grad:
                continue
            block = ADAPTER + ("." + pname.split(".")[0] if "." in pname else "")
            if block not in names:
                names.append(block)
            params.append(p)
            owner.append(names.index(block))
        self.blocks, self.student, self.params = names, student, params
        self.owner = torch.tensor(owner, dtype=torch.long, device=device)

    def norms(self, seg: dict[str, torch.Tensor], dist: dict[str, torch.Tensor]) -> dict[str, float]:
        """Gradient norms of the segmentation loss (at the method's weight) and of each distillation term:
        over the student's weights (``gradnorm_<term>``) and per block (``gradnorm_<term>@<block>``;
        adapter blocks for the distillation terms only, the segmentation loss does not reach them).

        One gradient per term over all probed parameters; the squared norms are summed per block, so the
        student's blocks add up to the whole-student norm.
        """
        blocks, student = self.blocks, self.student
        norms = {}
        for name, value in {SEG: self.method.segmentation_weight * sum(seg.values()), **dist}.items():
            shown = blocks[:student] if name == SEG else blocks
            if not (torch.is_tensor(value) and value.requires_grad):
                norms.update({column(name): 0.0, **{column(name, b): 0.0 for b in shown}})
                continue
            grads = torch.autograd.grad(value, self.params, retain_graph=True, allow_unused=True)
            squares = torch.stack([g.double().pow(2).sum() if g is not None
                                   else torch.zeros((), dtype=torch.float64, device=p.device)
                                   for g, p in zip(grads, self.params)])
            per_block = torch.zeros(len(blocks), dtype=torch.float64, device=squares.device)
            per_block = per_block.index_add_(0, self.owner.to(squares.device), squares).tolist()  # one sync
            norms[column(name)] = math.sqrt(sum(per_block[:student]))
            norms.update({column(name, b): math.sqrt(v) for b, v in zip(blocks, per_block) if b in shown})
        return norms
