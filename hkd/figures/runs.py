"""Run names in figures: ``METHOD_wWIDTH_sSEED`` for students, ``teacher`` for the teacher."""

from __future__ import annotations

import re

_RUN = re.compile(r"^(?P<model>(?P<method>[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*?)_w(?P<width>[^_]+))(?:_s(?P<seed>\d+))?$")


def parse_run(name: str) -> dict[str, str | None]:
    """``{'model', 'method', 'width', 'seed'}`` of a run name; the teacher (or any other name) is its own model."""
    m = _RUN.match(name)
    if not m:
        return {"model": name, "method": name, "width": None, "seed": None}
    return m.groupdict()
