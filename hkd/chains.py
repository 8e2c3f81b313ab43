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


def read_chains(entries: list[dict], methods: list[str], students: dict, lockstep: bool) -> dict[str, dict]:
    """`students.chains`, checked against the study's `methods` and `students` (label -> model spec): each entry's
    assistant is a run of the study (a method of `students.methods`, or an earlier chain, at one of the
    students), trained for every seed; label -> method, assistant, students and config key."""
    chains: dict[str, dict] = {}
    for i, entry in enumerate(entries):
        key = f"students.chains[{i}]"
        assistant = entry["assistant"]
        method, a_method, a_student = entry["method"], assistant["method"], str(assistant["student"])
        if method == "scratch" or is_chain(method):
            raise ValueError(f"config key {key}.method: '{method}' is not a distillation method")
        if a_method not in methods and a_method not in chains:
            raise ValueError(
                f"config key {key}.assistant.method: '{a_method}' is neither in students.methods "
                f"({', '.join(methods)}) nor an earlier chain ({', '.join(chains) or 'none'})"
            )
        if a_method == "scratch":
            raise ValueError(f"config key {key}.assistant.method: a scratch student is no assistant of a chain")
        for label in [a_student, *map(str, entry["students"])]:
            if label not in students:
                raise ValueError(
                    f"config key {key}: no student labelled '{label}' (students: {', '.join(students)})"
                )
        if a_method in chains and a_student not in chains[a_method]["students"]:
            raise ValueError(
                f"config key {key}.assistant: chain '{a_method}' trains no student '{a_student}' "
                f"(its students: {', '.join(chains[a_method]['students'])})"
            )
        label = chain_label(method, a_method, a_student)
        if label in chains:
            raise ValueError(f"config key {key}: the chain '{label}' is listed twice")
        chains[label] = {
            "method": method,
            "assistant_method": a_method,
            "assistant_student": a_student,
            "students": [str(s) for s in entry["students"]],
            "key": key,
        }
    if chains and lockstep:
        raise ValueError(
            "config keys students.chains and students.lockstep: a chain's student waits for its assistant, "
            "so it cannot step with it in one cohort; set students.lockstep: false"
        )
    return chains
