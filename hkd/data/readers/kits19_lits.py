"""The reader of the KiTS19 and LiTS formats: finding their image/label pairs by file name.

Both datasets are read like the Synapse RawData folders (:mod:`hkd.data.readers.rawdata`): file
names give the case ids and pairs, and :func:`hkd.data.nifti.load_raw_case` validates each pair and
reorients it from its affine. The folder given may be the dataset's own folder or any
folder above it (an extracted archive, a clone of the KiTS19 repository); hidden folders such as
``.git`` are not searched.

- ``kits19``: ``case_XXXXX/imaging.nii.gz`` and ``case_XXXXX/segmentation.nii.gz`` (labels 0
  background, 1 kidney, 2 tumour). Case folders holding only ``imaging`` are the challenge's unlabelled
  test cases: they are skipped with a warning. A ``segmentation`` without its ``imaging`` is an error:
  the imaging is downloaded separately from the labels (``hkd download --source kits19``).
- ``lits``: ``volume-N.nii[.gz]`` and ``segmentation-N.nii[.gz]`` in the same folder, in any
  subfolder (the training batches); labels 0 background, 1 liver, 2 tumour.

Case ids are the case numbers, zero-padded: five digits for KiTS19 (as its folders), three for LiTS.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hkd.data import kits19_lits_files as files
from hkd.data.case import RawCase
from hkd.data.file_names import pattern
from hkd.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    name: str
    image: re.Pattern  # matched against a file's path relative to the root (POSIX separators)
    label: re.Pattern
    label_name: Callable[[str, str], str]  # (number, ending) -> the label's path (kits19_lits_files)
    digits: int  # zero-padding of case ids
    unlabelled: str  # what an image without a label is: "skip" (unlabelled test case) or "error"
    orphan_label: str  # what a label without an image is: "warn" or "error"
    hint: str  # appended to the error about missing files
    expected: str  # the file names, for the error about a folder without cases

    def case_id(self, number: str) -> str:
        return str(int(number)).zfill(self.digits)

    def label_for(self, image: PurePosixPath, number: str, suffix: str) -> PurePosixPath:
        """Where the label of ``image`` must lie (same folder, same compression)."""
        label = PurePosixPath(self.label_name(number, f".nii{suffix}"))
        return image.parent / label.name


KITS19 = Layout(
    "kits19", pattern(files.kits19_image), pattern(files.kits19_label), files.kits19_label,
    digits=files.KITS19_DIGITS, unlabelled="skip", orphan_label="error",
    hint="the KiTS19 imaging is downloaded separately from the labels: hkd download --source kits19",
    expected=f"{files.kits19_image('XXXXX')} with {files.kits19_label('XXXXX')}",
)
LITS = Layout(
    "lits", pattern(files.lits_image), pattern(files.lits_label), files.lits_label,
    digits=files.LITS_DIGITS, unlabelled="error", orphan_label="warn",
    hint=f"LiTS pairs {files.lits_image('N')} with {files.lits_label('N')} in the same folder",
    expected=f"{files.lits_image('N')} with {files.lits_label('N')}, or .nii.gz",
)
LAYOUTS = {layout.name: layout for layout in (KITS19, LITS)}


def _files(root: Path) -> list[str]:
    """Every file below ``root`` as a relative POSIX path, skipping hidden folders and files."""
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = PurePosixPath(Path(folder).relative_to(root).as_posix())
        out.extend(str(rel / f) if str(rel) != "." else f for f in sorted(names) if not f.startswith("."))
    return out


def pair_names(names: list[str], layout: Layout, where: str) -> dict[str, tuple[str, str]]:
    """Case id -> (image name, label name) among ``names`` (relative POSIX paths, e.g. a zip's entries).

    Raises DataError naming the file for a case stored twice, a missing label (LiTS) or a missing image
    (KiTS19); logs the skipped unlabelled KiTS19 cases and the LiTS labels without an image.
    """
    present = set(names)
    pairs: dict[str, tuple[str, str]] = {}
    unlabelled = []
    for name in names:
        m = layout.image.search(name)
        if not m:
            continue
        number, suffix = m.group(1), m.group(2) or ""
        label = str(layout.label_for(PurePosixPath(name), number, suffix))
        if label not in present:
            other = label[:-3] if suffix else label + ".gz"  # the other compression is accepted too
            if other not in present:
                if layout.unlabelled == "skip":
                    unlabelled.append(name)
                    continue
                raise DataError(f"{where}/{name}: no matching label file {where}/{label}; {layout.hint}")
            label = other
        cid = layout.case_id(number)
        if cid in pairs:
            raise DataError(f"{where}/{name}: case {cid} is also stored as {where}/{pairs[cid][0]}; "
                            "keep one of the two files")
        pairs[cid] = (name, label)
    used = {label for _, label in pairs.values()}
    orphans = [n for n in names if layout.label.search(n) and n not in used]
    if orphans and layout.orphan_label == "error":
        raise DataError(f"{where}/{orphans[0]}: no image file beside this label; {layout.hint}")
    if orphans:
        log.warning("%s: label files without an image, ignored: %s", where, ", ".join(orphans))
    if unlabelled:
        log.warning("%s: %d image(s) without a label (unlabelled test cases), skipped: %s", where,
                    len(unlabelled), ", ".join(unlabelled[:5]) + (", ..." if len(unlabelled) > 5 else ""))
    if not pairs:
        raise DataError(f"{where}: no labelled {layout.name} cases (expected {layout.expected})")
    return dict(sorted(pairs.items()))


def find_layout_cases(root: str | Path, fmt: str) -> list[RawCase]:
    """The labelled cases of a KiTS19 or LiTS folder (``fmt``), sorted by case id."""
    layout = LAYOUTS[fmt]
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected the {fmt} dataset folder)")
    pairs = pair_names(_files(root), layout, str(root))
    return [RawCase(cid, root / image, root / label) for cid, (image, label) in pairs.items()]


# --- the reader interface of hkd.data.readers (formats 'kits19' and 'lits') --------------------------
def list_cases(root: str | Path, fmt: str) -> dict[str, int]:
    """Case id -> number of axial slices, from the headers."""
    from hkd.data.nifti import depths

    return depths(find_layout_cases(root, fmt))


def iter_cases(root: str | Path, fmt: str, case_ids: list[str], liver_id: int | None = None):
    """The validated cases ``case_ids``, one at a time."""
    from hkd.data.nifti import load_cases

    return load_cases(find_layout_cases(root, fmt), case_ids)


def count_cases(path: Path, fmt: str) -> int:
    """Number of labelled cases of a folder or zip, from file names only."""
    from hkd.data.archive import zip_names

    if path.is_file():
        return len(pair_names(zip_names(path), LAYOUTS[fmt], str(path)))
    return len(find_layout_cases(path, fmt))
