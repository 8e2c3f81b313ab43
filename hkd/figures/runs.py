"""The runs in figures: described as data by the workflow (``hkd figures --runs``), or by name.

A name given by hand (``hkd figures --models/--logs``) is ``METHOD_wWIDTH_sSEED`` for a student (METHOD
may be a chain's label, ``latent@latent_w1.5``) and ``teacher`` for the teacher, read by :func:`parse_run`.
"""

from __future__ import annotations

import re

_RUN = re.compile(r"^(?P<model>(?P<method>[A-Za-z0-9@.]+(?:_[A-Za-z0-9@.]+)*?)_w(?P<width>[^_]+))(?:_s(?P<seed>\d+))?$")


def parse_run(name: str) -> dict[str, str | None]:
    """``{'model', 'method', 'width', 'seed'}`` of a run name; the teacher (or any other name) is its own model."""
    m = _RUN.match(name)
    if not m:
        return {"model": name, "method": name, "width": None, "seed": None}
    return m.groupdict()


def describe(name: str, runs: dict[str, dict] | None = None) -> dict[str, str | None]:
    """``{'model', 'method', 'width', 'seed'}`` of run ``name``: from ``runs`` (name -> description) where it
    is described there, else read from the name; width and seed as strings (or None)."""
    run = (runs or {}).get(name) or parse_run(name)
    return {"model": str(run["model"]), "method": str(run["method"]),
            **{k: None if run.get(k) is None else str(run[k]) for k in ("width", "seed")}}
