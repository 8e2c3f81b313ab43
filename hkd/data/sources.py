"""One entry point over the source formats: Synapse RawData, KiTS19 and LiTS NIfTI folders, TransUNet imports."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from hkd.data.cases import Case, DataError, RawCase, find_raw_cases, load_raw_case, raw_depth
from hkd.data.layouts import LAYOUTS, find_layout_cases, pair_names
from hkd.data.transunet_format import check_label_order, load_transunet_case, transunet_case_ids, transunet_cases

FORMATS = ("rawdata", "transunet", *LAYOUTS)
_ZIP_IMG_RE = re.compile(r"(^|/)Training/img/img\d+\.nii(\.gz)?$")


def find_nifti_cases(root: str | Path, fmt: str) -> list[RawCase]:
    """The image/label pairs of a NIfTI source folder: Synapse ``rawdata``, ``kits19`` or ``lits``."""
    return find_raw_cases(root) if fmt == "rawdata" else find_layout_cases(root, fmt)


def list_cases(root: str | Path, fmt: str) -> dict[str, int]:
    """Case id -> number of axial slices, from headers only where possible."""
    if fmt == "rawdata" or fmt in LAYOUTS:
        return {raw.case_id: raw_depth(raw) for raw in find_nifti_cases(root, fmt)}
    if fmt == "transunet":
        return transunet_cases(root)
    raise DataError(f"data.format: unknown format '{fmt}' ({', '.join(FORMATS)})")


def count_cases(path: str | Path, source: str) -> int | None:
    """Number of cases a source holds, from file names only (no file is read): for checks before any
    work starts. None when the source does not exist yet (it is generated or downloaded by the workflow).
    """
    path = Path(path)
    if not path.exists():
        return None
    if source in LAYOUTS:
        if path.is_file():
            return len(pair_names(_zip_names(path), LAYOUTS[source], str(path)))
        return len(find_layout_cases(path, source))
    if source == "zip":
        names = _zip_names(path)
        return len({PurePosixPath(n).name.split(".")[0] for n in names if _ZIP_IMG_RE.search(n)})
    if source == "transunet":
        return len(transunet_case_ids(path))
    return len(find_raw_cases(path))


def _zip_names(path: Path) -> list[str]:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return [n.replace("\\", "/") for n in archive.namelist()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable zip file ({exc})") from exc


def iter_cases(root: str | Path, fmt: str, case_ids: list[str], liver_id: int | None = None) -> Iterator[Case]:
    """Yield validated cases one at a time (so memory holds one case).

    For TransUNet imports, ``liver_id`` (the source id the label map sends to the liver) is checked
    against the data after the last case: the liver must be the largest organ.
    """
    wanted = set(case_ids)
    if fmt == "rawdata" or fmt in LAYOUTS:
        for raw in find_nifti_cases(root, fmt):
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
