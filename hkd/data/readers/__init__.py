"""The readers: one module per format of case files (:data:`hkd.data.sources.FORMATS`), imported only when
a case is listed or read, so a job runs the reader of its own source and no other (``hkd/workflow_deps.py``).

Every reader offers ``list_cases``, ``iter_cases`` and ``count_cases``; this package dispatches on the
format.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

from hkd.data.sources import FORMATS, SOURCES
from hkd.errors import DataError


def reader(fmt: str):
    """The module that reads files of format ``fmt`` (imported now)."""
    if fmt not in FORMATS:
        raise DataError(f"data.format: unknown format '{fmt}' ({', '.join(FORMATS)})")
    return importlib.import_module(FORMATS[fmt])


def list_cases(root: str | Path, fmt: str) -> dict[str, int]:
    """Case id -> number of axial slices, from headers only where possible."""
    return reader(fmt).list_cases(root, fmt)


def iter_cases(root: str | Path, fmt: str, case_ids: list[str], liver_id: int | None = None) -> Iterator:
    """Yield validated cases one at a time (so memory holds one case).

    For TransUNet imports, ``liver_id`` (the source id the label map sends to the liver) is checked
    against the data after the last case: the liver must be the largest organ.
    """
    return reader(fmt).iter_cases(root, fmt, case_ids, liver_id)


def count_cases(path: str | Path, source: str) -> int | None:
    """Number of cases a source's folder or zip holds, from file names only (no file is read): for checks
    before any work starts. None when it does not exist yet (it is generated or downloaded by the workflow).
    """
    path = Path(path)
    if not path.exists():
        return None
    fmt = SOURCES[source].format or "rawdata"
    return reader(fmt).count_cases(path, fmt)
