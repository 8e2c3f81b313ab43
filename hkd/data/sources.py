"""One entry point over the source formats: Synapse RawData NIfTI folders and TransUNet imports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hkd.data.cases import Case, DataError, find_raw_cases, load_raw_case, raw_depth
from hkd.data.transunet_format import check_label_order, load_transunet_case, transunet_cases

FORMATS = ("rawdata", "transunet")


def list_cases(root: str | Path, fmt: str) -> dict[str, int]:
    """Case id -> number of axial slices, from headers only where possible."""
    if fmt == "rawdata":
        return {raw.case_id: raw_depth(raw) for raw in find_raw_cases(root)}
    if fmt == "transunet":
        return transunet_cases(root)
    raise DataError(f"data.format: unknown format '{fmt}' ({', '.join(FORMATS)})")


def iter_cases(root: str | Path, fmt: str, case_ids: list[str], liver_id: int | None = None) -> Iterator[Case]:
    """Yield validated cases one at a time (so memory holds one case).

    For TransUNet imports, ``liver_id`` (the source id the label map sends to the liver) is checked
    against the data after the last case: the liver must be the largest organ.
    """
    wanted = set(case_ids)
    if fmt == "rawdata":
        for raw in find_raw_cases(root):
            if raw.case_id in wanted:
                yield load_raw_case(raw)
        return
    if fmt != "transunet":
        raise DataError(f"data.format: unknown format '{fmt}' ({', '.join(FORMATS)})")
    counts: Counter[int] = Counter()
    for cid in sorted(wanted):
        case = load_transunet_case(root, cid)
        values, n = np.unique(case.label, return_counts=True)
        counts.update(dict(zip(values.tolist(), n.tolist())))
        yield case
    if liver_id is not None:
        check_label_order(dict(counts), liver_id, str(root))
