"""Teacher-assistant chains: a student distilled from another trained student of the study.

A chain run's method label is ``METHOD@ASSISTANT``: the registered method ``METHOD`` distils the student
from the assistant, the run ``ASSISTANT`` names (its model name ``LABEL_wSTUDENT``, where ``LABEL`` is a
method or itself a chain label). Run names and folders use the label as they use a method name, so a chain
run is a row of the run table like any other. Standard library only (the workflow reads it when it parses).
"""

from __future__ import annotations

SEPARATOR = "@"


def chain_label(method: str, assistant_method: str, assistant_student: str) -> str:
    """The method label of ``method`` distilling from the run of ``assistant_method`` at ``assistant_student``."""
    return f"{method}{SEPARATOR}{assistant_method}_w{assistant_student}"


def is_chain(label: str) -> bool:
    """Whether a method label names a chain (a student taught by an assistant, not the teacher)."""
    return SEPARATOR in str(label)


def direct_method(label: str) -> str:
    """The registered method a method label distils with: the label itself for a plain method."""
    return str(label).split(SEPARATOR, 1)[0]
