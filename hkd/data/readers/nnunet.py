"""The reader of the nnU-Net raw dataset format (``data.source: nnunet``), in which most public CT data now ship.

A dataset folder (``DatasetXXX_Name``; ``data.path`` is it, or a folder holding exactly one) holds
``dataset.json`` (``channel_names``, ``labels``, ``file_ending``), ``imagesTr/CASE_0000<file_ending>`` (the
first and, for hkd, only channel) and ``labelsTr/CASE<file_ending>``. hkd reads CT, one channel, in NIfTI:
another channel count, a channel not named CT, a file ending other than .nii.gz or .nii, or region-based
labels are refused in one line naming dataset.json. Case ids are nnU-Net's case identifiers; each pair is
validated and reoriented by :mod:`hkd.data.nifti`.

The label map comes from the dataset, not the config: each of ``data.classes`` must be a name of
``labels`` (:func:`label_map`), and a label of the dataset that ``data.classes`` does not name becomes
background.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hkd.data.case import RawCase
from hkd.data.nifti import depths, load_cases
from hkd.data.nnunet_files import DESCRIPTION, ENDINGS, IMAGES, LABELS, image_name
from hkd.errors import DataError

log = logging.getLogger(__name__)

def dataset_folder(root: str | Path) -> Path:
    """The folder holding ``dataset.json``: ``root`` itself, or the one dataset folder inside it."""
    root = Path(root)
    if (root / DESCRIPTION).is_file():
        return root
    inside = [p for p in sorted(root.iterdir()) if (p / DESCRIPTION).is_file()] if root.is_dir() else []
    if len(inside) != 1:
        found = f"{len(inside)} dataset folders" if inside else f"no {DESCRIPTION}"
        raise DataError(f"{root}: {found} (data.path of source nnunet is an nnU-Net raw dataset folder: "
                        f"{DESCRIPTION}, {IMAGES}/, {LABELS}/)")
    return inside[0]


def read_description(root: str | Path) -> dict:
    """The dataset's ``dataset.json``, checked: one channel, CT, NIfTI files, one integer id per label."""
    path = dataset_folder(root) / DESCRIPTION
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from None
    meta = meta if isinstance(meta, dict) else {}
    missing = [k for k in ("channel_names", "labels", "file_ending") if k not in meta]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} (an nnU-Net raw dataset's description)")
    channels = meta["channel_names"]
    if not isinstance(channels, dict) or len(channels) != 1 or str(next(iter(channels.values()))).upper() != "CT":
        raise DataError(f"{path}: channel_names {channels}; hkd segments CT with one channel ({{\"0\": \"CT\"}})")
    if meta["file_ending"] not in ENDINGS:
        raise DataError(f"{path}: file_ending {meta['file_ending']!r}; hkd reads NIfTI ({', '.join(ENDINGS)})")
    labels = meta["labels"]
    if not isinstance(labels, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        raise DataError(f"{path}: labels {labels}; hkd reads one integer id per label (region-based labels, "
                        "lists of ids, are not supported)")
    return meta


def label_map(root: str | Path, classes: list[str]) -> dict[int, int]:
    """Source label id -> class id, from the names of ``dataset.json``'s labels: each class of ``classes``
    must be one of them; a label no class names becomes background (0)."""
    labels = read_description(root)["labels"]
    missing = [c for c in classes if c not in labels]
    if missing:
        raise DataError(f"{dataset_folder(root) / DESCRIPTION}: no label named {', '.join(missing)} (data.classes); "
                        f"its labels: {', '.join(labels)}")
    dropped = sorted(name for name in labels if name not in classes)
    if dropped:
        log.info("%s: labels %s are not in data.classes and become background", dataset_folder(root),
                 ", ".join(dropped))
    return {int(i): classes.index(name) if name in classes else 0 for name, i in labels.items()}


def find_raw_cases(root: str | Path) -> list[RawCase]:
    """The labelled training cases: each ``labelsTr`` file with its ``imagesTr`` channel-0 image."""
    folder = dataset_folder(root)
    ending = read_description(folder)["file_ending"]
    labels_dir = folder / LABELS
    if not labels_dir.is_dir():
        raise DataError(f"{folder}: no {LABELS} folder (an nnU-Net raw dataset: {IMAGES}/, {LABELS}/)")
    cases = []
    for label in sorted(p for p in labels_dir.iterdir() if p.name.endswith(ending) and not p.name.startswith(".")):
        case_id = label.name[:-len(ending)]
        image = folder / image_name(case_id, ending)
        if not image.is_file():
            raise DataError(f"{label}: no matching image {image}")
        cases.append(RawCase(case_id, image, label))
    if not cases:
        raise DataError(f"{labels_dir}: no *{ending} label files")
    return cases


# --- the reader interface of hkd.data.readers ---------------------------------------------------------
def list_cases(root: str | Path, fmt: str = "nnunet") -> dict[str, int]:
    """Case id -> number of axial slices, from the headers."""
    return depths(find_raw_cases(root))


def iter_cases(root: str | Path, fmt: str, case_ids: list[str], liver_id: int | None = None):
    """The validated cases ``case_ids``, one at a time."""
    return load_cases(find_raw_cases(root), case_ids)


def count_cases(path: Path, fmt: str = "nnunet") -> int:
    """Number of labelled cases, from file names only."""
    return len(find_raw_cases(path))
