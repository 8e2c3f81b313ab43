"""The claims of a verdict table, each a contrast: a signed sum of models' case values, claimed above 0.

A model (an :class:`Arm`) is one method at one student (a SqueezeUNet width, or a label of
``students.models``) over its seeds. Each claim kind is a function from the study's case values to its
contrasts; :mod:`hkd.evaluate.hypotheses` tests every contrast the same way (the crossed bootstrap over
cases and each arm's seeds, the one-sided Wilcoxon test on the case-level contrast, Holm over the table):

- :func:`scratch_contrasts`: every distillation method against scratch training at the same student
  (``method - scratch``), the study's hypotheses;
- :func:`gain_gap_contrasts`: for two students ``a`` and ``b`` and each method both trained, how much more
  ``a`` gains from the method over its own scratch run than ``b`` does,
  ``(a's method - a's scratch) - (b's method - b's scratch)`` (``report.compare_students``). With a
  transformer teacher, a transformer ``a`` and a CNN ``b``, this is the heterogeneous gap.

- :func:`chain_contrasts`: every teacher-assistant chain (method label ``METHOD@ASSISTANT``,
  :mod:`hkd.chains`) against the same method distilled directly from the teacher at the same student
  (``chain - direct``), derived from the labels the evaluations hold.

A new kind of claim is one more such function.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from hkd.chains import direct_method, is_chain


@dataclass(frozen=True)
class Arm:
    """One model of a claim: the runs of ``method`` at student ``width``, their sign in the claim
    (``weight``), and how a note names them (``role``, e.g. "the method's")."""

    method: str
    width: str
    weight: int
    role: str


@dataclass(frozen=True)
class Contrast:
    """One claim: ``sum(arm.weight * arm's case value)`` is above 0.

    ``student`` labels the row (a width, or ``"a vs b"`` for a claim across students); ``difference`` says
    what is subtracted from what; ``means`` maps a column of the table (``method_mean``, ``scratch_mean``)
    to the arm whose mean it shows; ``gains`` are ``(name, i, j)``: ``mean(arm i) - mean(arm j)``, stated
    in the note.
    """

    claim: str
    method: str
    student: str
    difference: str
    arms: tuple[Arm, ...]
    means: dict[str, int] = field(default_factory=dict)
    gains: tuple[tuple[str, int, int], ...] = ()

    @property
    def single_student(self) -> bool:
        """Whether every arm is the same student (the row then has its width and parameter count)."""
        return len({arm.width for arm in self.arms}) == 1


def students(values: pd.DataFrame) -> list[str]:
    """The students (widths and labels) of the study's case values, in order of appearance, teacher left out."""
    return values.loc[values["method"] != "teacher", "width"].astype(str).drop_duplicates().tolist()


def _methods(values: pd.DataFrame, width: str) -> list[str]:
    return values.loc[values["width"].astype(str) == width, "method"].drop_duplicates().tolist()


def scratch_contrasts(values: pd.DataFrame, claim_text, lower_is_better: bool = False) -> list[Contrast]:
    """Per student with a scratch run, per distillation method trained on it: ``method - scratch``, or for a
    quantity where lower is better (an error) ``scratch - method``; ``claim_text(method)`` words the claim."""
    out = []
    for width in students(values):
        methods = _methods(values, width)
        if "scratch" not in methods:
            continue
        for method in methods:
            if method == "scratch":
                continue
            arms = [Arm(method, width, 1, "the method's"), Arm("scratch", width, -1, "scratch's")]
            difference = "method - scratch"
            if lower_is_better:  # the same two models, scratch first
                arms = [Arm("scratch", width, 1, "scratch's"), Arm(method, width, -1, "the method's")]
                difference = "scratch - method"
            out.append(Contrast(claim_text(method), method, width, difference, tuple(arms),
                                means={"method_mean": 1 if lower_is_better else 0,
                                       "scratch_mean": 0 if lower_is_better else 1}))
    return out


def gain_gap_contrasts(values: pd.DataFrame, first: str, second: str,
                       source: str = "report.compare_students") -> list[Contrast]:
    """Per method trained on both students ``first`` and ``second``: ``first``'s gain over its own scratch
    run minus ``second``'s, claimed above 0 ("``first`` gains more from the method than ``second``").

    An error names ``source`` (the option or config key) when a student is not in the study, the two are
    the same, or one has no scratch run.
    """
    known = students(values)
    for label in (first, second):
        if label not in known:
            raise ValueError(f"{source}: no student {label!r} in the evaluations (students: {', '.join(known)})")
    if first == second:
        raise ValueError(f"{source}: compares student {first!r} with itself; name two students")
    a_methods, b_methods = _methods(values, first), _methods(values, second)
    for label, methods in ((first, a_methods), (second, b_methods)):
        if "scratch" not in methods:
            raise ValueError(f"{source}: student {label!r} has no scratch run to measure its gains against")
    return [Contrast(f"{first} gains more from {method} than {second} (each over its own scratch)", method,
                     f"{first} vs {second}", f"({first}: method - scratch) - ({second}: method - scratch)",
                     (Arm(method, first, 1, f"{first}'s {method}"), Arm("scratch", first, -1, f"{first}'s scratch"),
                      Arm(method, second, -1, f"{second}'s {method}"), Arm("scratch", second, 1, f"{second}'s scratch")),
                     gains=((f"{first}'s gain over its scratch", 0, 1), (f"{second}'s gain over its scratch", 2, 3)))
            for method in a_methods if method != "scratch" and method in b_methods]


def chain_contrasts(values: pd.DataFrame) -> list[Contrast]:
    """Per student, per chain trained on it whose method was also distilled directly from the teacher there:
    ``chain - direct`` ("the assistant chain beats direct distillation")."""
    out = []
    for width in students(values):
        methods = _methods(values, width)
        out += [Contrast(f"the chain {label} beats direct {direct_method(label)}", label, width, "chain - direct",
                         (Arm(label, width, 1, "the chain's"), Arm(direct_method(label), width, -1, "direct's")),
                         means={"method_mean": 0}, gains=(("chain over direct", 0, 1),))
                for label in methods if is_chain(label) and direct_method(label) in methods]
    return out

