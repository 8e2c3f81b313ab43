"""The reader of the Synapse RawData format: ``Training/img/imgNNNN.nii.gz`` with ``Training/label/labelNNNN.nii.gz``.

Sources ``synapse``, ``zip`` and ``folder``, and the phantom's synapse layout. Case ids are the case
numbers, zero-padded to four digits; each pair is validated and reoriented by :mod:`hkd.data.nifti`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hkd.data import rawdata_files as files
from hkd.data.archive import zip_names
from hkd.data.file_names import pattern
from hkd.data.case import RawCase
from hkd.data.nifti import depths, load_cases
from hkd.errors import DataError

log = logging.getLogger(__name__)

_IMG_RE = pattern(files.image_file)
_LABEL_RE = pattern(files.label_file)
_ZIP_IMG_RE = pattern(lambda number, ending: f"{files.IMAGES}/{files.image_file(number, ending)}")


def find_raw_cases(root: str | Path) -> list[RawCase]:
    """List the labelled cases of a Synapse RawData folder (``Training/img``, ``Training/label``).

    ``root`` may be the RawData folder itself or a folder containing it.
    """
    root = Path(root)
    for base in (root, root / "RawData"):
        if (base / files.IMAGES).is_dir():
            break
    else:
        raise DataError(f"{root}: no {files.IMAGES} folder (expected the Synapse RawData layout)")
    cases: dict[str, RawCase] = {}
    for img in sorted((base / files.IMAGES).iterdir()):
        m = _IMG_RE.match(img.name)
        if not m:
            continue
        number = m.group(1)
        label = base / files.LABELS / files.label_file(number, img.name[m.end(1):])
        if not label.exists():
            raise DataError(f"{img}: no matching label file {label}")
        case_id = number.zfill(files.DIGITS)
        if case_id in cases:  # img3 and img0003, or img0003.nii and img0003.nii.gz
            raise DataError(f"{img}: case {case_id} is also stored as {cases[case_id].image_path.name}; "
                            "keep one of the two files")
        cases[case_id] = RawCase(case_id, img, label)
    if not cases:
        raise DataError(f"{base / files.IMAGES}: no {files.image_file('*')} files")
    used = {c.label_path.name for c in cases.values()}
    label_dir = base / files.LABELS
    orphans = sorted(p.name for p in label_dir.iterdir() if _LABEL_RE.match(p.name) and p.name not in used)
    if orphans:
        log.warning("%s: label files without an image, ignored: %s", label_dir, ", ".join(orphans))
    return sorted(cases.values(), key=lambda c: c.case_id)


# --- the reader interface of hkd.data.readers ---------------------------------------------------------
def list_cases(root: str | Path, fmt: str = "rawdata") -> dict[str, int]:
    """Case id -> number of axial slices, from the headers."""
    return depths(find_raw_cases(root))


def iter_cases(root: str | Path, fmt: str, case_ids: list[str], liver_id: int | None = None):
    """The validated cases ``case_ids``, one at a time."""
    return load_cases(find_raw_cases(root), case_ids)


def count_cases(path: Path, fmt: str = "rawdata") -> int:
    """Number of cases of a RawData folder or zip, from file names only."""
    if path.is_file():
        return len({Path(n).name.split(".")[0] for n in zip_names(path) if _ZIP_IMG_RE.search(n)})
    return len(find_raw_cases(path))
