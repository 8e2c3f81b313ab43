"""``ofa``: one-for-all heterogeneous distillation (OFA-KD; Hao et al., NeurIPS 2023).

Intermediate features of a ViT and a CNN differ most, so OFA-KD compares them where the architectures
agree: in the space of class predictions. Each chosen student stage gets a small branch that turns its
map into per-pixel class logits on that stage's grid; each branch is trained against a target made from
the teacher's logits. A stage named ``logits`` takes the student's own output, without a branch (OFA's loss
on the final prediction).

The loss has an adaptive target. With ``p = softmax(z / T)`` over the classes and ``y`` the one-hot label,
the target at each pixel of the input grid is::

    q_c = (p_t,c + y_c)^eps - y_c                 L = - sum_c q_c * log p_s,c

For ``eps = 1`` the target is the teacher's probabilities (cross-entropy with soft labels); ``eps > 1``
raises the labelled class's weight where the teacher is unsure of it (``(1 + p)^eps - 1`` grows faster
than ``p``) and damps the other classes (``p^eps < p``). A pixel without a label (outside a rotated slice)
keeps the teacher's part, ``p_t^eps``. On a coarser stage the target is ``q`` averaged over the pixels of
each cell with :meth:`~hkd.distill.base.DistillMethod.align` (the loss is linear in the target, so this is
the pixel loss of the cell's prediction, averaged over the pixels it covers); building the target after
averaging would mix fractional labels into the power and could give negative weights, which the loss would
reward by driving those classes' probabilities to zero. The term is ``weight * sum over stages of mean over
cells and batch of L``; it is a cross-entropy, so it does not vanish for a student equal to the teacher.

The branches are adapters: sub-modules of the method, not of the student, so they train with the student
(the trainer optimises and checkpoints ``method.parameters()``) and are dropped after training; the
student's inference output and parameter count do not change. Each branch is one 3x3 convolution
(stage channels -> classes), the per-pixel counterpart of OFA's pooled linear head, reading the stage's
map directly.

Options: ``weight`` (default 0.54, by the balance rule of
``benchmarks/grad_ratios.py``, measured on the runs' own logs, docs/methods.md: "Default weights"; earlier 3), ``eps`` (default 1.5),
``temperature`` (default 1,
OFA's) and ``stages`` (student feature names; default ``enc_s4``, ``enc_s8``, ``bottleneck``
and ``logits``: the encoder from stride 4 to the bottleneck, and the output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hkd.distill import register
from hkd.distill.base import DistillMethod
from hkd.distill.functional import as_name_list, one_hot

DEFAULT_STAGES = ("enc_s4", "enc_s8", "bottleneck", "logits")
OUTPUT = ("student", "logits")


def adaptive_target(teacher: torch.Tensor, onehot: torch.Tensor, eps: float, temperature: float) -> torch.Tensor:
    """``(p_t + y)^eps - y`` of teacher logits and one-hot labels ``(B, C, H, W)`` on the same grid."""
    p_t = F.softmax(teacher.float() / float(temperature), dim=1)
    y = onehot.float()
    return (p_t + y).pow(float(eps)) - y


def soft_cross_entropy(student: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """``- sum_c target_c log softmax(student / T)_c``, mean over cells and batch."""
    return -(target * F.log_softmax(student.float() / float(temperature), dim=1)).sum(dim=1).mean()


@register
class OneForAll(DistillMethod):
    name = "ofa"
    teacher_features = ("logits",)
    student_features = DEFAULT_STAGES
    positive_options = ("eps", "temperature")

    @classmethod
    def option_defaults(cls) -> dict:
        return {"weight": 0.54, "eps": 1.5, "temperature": 1.0, "stages": list(DEFAULT_STAGES)}

    def __init__(self, teacher_specs, student_specs, num_classes, **options):
        super().__init__(teacher_specs, student_specs, num_classes, **options)
        self.require_matching_classes()
        self.stages = list(dict.fromkeys(as_name_list(self.options["stages"])))
        if not self.stages:
            raise ValueError("distillation method 'ofa': no stages given")
        self.student_features = tuple(dict.fromkeys([*self.stages, "logits"]))
        self.require_features()
        classes = self.channels("teacher", "logits")
        self.branches = nn.ModuleDict({s: nn.Conv2d(self.channels("student", s), classes, kernel_size=3, padding=1)
                                       for s in self.stages if s != "logits"})

    def forward(self, teacher, student, target):
        t_logits = self.align(teacher["logits"], ("teacher", "logits"), OUTPUT)
        temperature = self.options["temperature"]
        q = adaptive_target(t_logits, one_hot(target, self.num_classes), self.options["eps"], temperature)
        total = 0.0
        for stage in self.stages:
            logits = student["logits"] if stage == "logits" else self.branches[stage](student[stage])
            total = total + soft_cross_entropy(logits, self.align(q, OUTPUT, ("student", stage)), temperature)
        return {"ofa": float(self.options["weight"]) * total}
