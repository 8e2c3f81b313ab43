"""The reader of the TransUNet format: the preprocessed Synapse files held by many users.

``train_npz/caseXXXX_sliceNNN.npz`` (keys ``image``, ``label``; one 512x512 slice each) and
``test_vol_h5/caseXXXX.npy.h5`` (``image``, ``label``: D x 512 x 512). Images are already windowed
to [-125, 275] HU and scaled to [0, 1]; voxel spacing is not stored, so it is reported as 1 mm.
The label ids inside these files follow an order that public sources disagree on, so the importer
checks the configured order: the class configured as the liver must be the largest organ.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import h5py
import numpy as np

from hkd.data.case import Case
from hkd.errors import DataError

_NPZ_RE = re.compile(r"^case(\d+)_slice(\d+)\.npz$")
_H5_RE = re.compile(r"^case(\d+)\.npy\.h5$")


def _layout(root: Path) -> tuple[dict[str, list[tuple[int, Path]]], dict[str, Path]]:
    slices: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    if (root / "train_npz").is_dir():
        for p in (root / "train_npz").iterdir():
            if m := _NPZ_RE.match(p.name):
                slices[m.group(1).zfill(4)].append((int(m.group(2)), p))
    volumes = {}
    if (root / "test_vol_h5").is_dir():
        for p in (root / "test_vol_h5").iterdir():
            if m := _H5_RE.match(p.name):
                volumes[m.group(1).zfill(4)] = p
    if not slices and not volumes:
        raise DataError(f"{root}: no train_npz/case*_slice*.npz or test_vol_h5/case*.npy.h5 files")
    overlap = sorted(set(slices) & set(volumes))
    if overlap:
        raise DataError(f"{root}: cases {overlap} appear in both train_npz and test_vol_h5")
    return slices, volumes


def transunet_case_ids(root: str | Path) -> list[str]:
    """Case ids of a TransUNet folder, from file names only."""
    slices, volumes = _layout(Path(root))
    return sorted(set(slices) | set(volumes))


def transunet_cases(root: str | Path) -> dict[str, int]:
    """Case id -> slice count."""
    slices, volumes = _layout(Path(root))
    counts = {cid: len(v) for cid, v in slices.items()}
    for cid, path in volumes.items():
        with h5py.File(path, "r") as f:
            counts[cid] = int(f["image"].shape[0])
    return dict(sorted(counts.items()))


def _check(image: np.ndarray, label: np.ndarray, source: Path) -> None:
    if image.shape != label.shape:
        raise DataError(f"{source}: image shape {image.shape} does not match label shape {label.shape}")
    if not np.isfinite(image).all():
        raise DataError(f"{source}: contains NaN or infinite voxels")
    if image.min() < -1e-3 or image.max() > 1 + 1e-3:
        raise DataError(f"{source}: image values outside [0, 1]; expected TransUNet-preprocessed data")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as data:
            return data["image"].astype(np.float32), data["label"]
    except Exception as exc:
        raise DataError(f"{path}: not a readable TransUNet slice file with 'image' and 'label' ({exc})") from exc


def load_transunet_case(root: str | Path, case_id: str) -> Case:
    """One case as a scaled volume (D, H, W), display orientation as stored by TransUNet."""
    slices, volumes = _layout(Path(root))
    if case_id in volumes:
        path = volumes[case_id]
        try:
            with h5py.File(path, "r") as f:
                image, label = f["image"][()].astype(np.float32), f["label"][()]
        except Exception as exc:
            raise DataError(f"{path}: not a readable TransUNet volume with 'image' and 'label' ({exc})") from exc
        _check(image, label, path)
    elif case_id in slices:
        parts = [_read_npz(p) for _, p in sorted(slices[case_id])]
        for (_, p), (im, lb) in zip(sorted(slices[case_id]), parts):
            _check(im, lb, p)
        image, label = np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])
        path = sorted(slices[case_id])[0][1]
    else:
        raise DataError(f"{root}: no case {case_id}")
    if (label != np.round(label)).any() or label.min() < 0 or label.max() > 255:
        raise DataError(f"{path}: label values must be integers in 0..255")
    return Case(case_id, image, label.astype(np.uint8), (1.0, 1.0, 1.0), scaled=True, source=str(path))


def check_label_order(voxel_counts: dict[int, int], liver_id: int, source: str) -> None:
    """The class configured as the liver must be the largest organ, else the label order is wrong."""
    organs = {k: v for k, v in voxel_counts.items() if k != 0 and v > 0}
    if organs:
        largest = max(organs, key=organs.get)
        if largest != liver_id:
            raise DataError(
                f"{source}: label order check failed: the largest organ is id {largest}, but the configured "
                f"map puts the liver at id {liver_id}; set data.label_map to match these files")


# --- the reader interface of hkd.data.readers (format 'transunet') -----------------------------------
def list_cases(root: str | Path, fmt: str = "transunet") -> dict[str, int]:
    """Case id -> slice count."""
    return transunet_cases(root)


def iter_cases(root: str | Path, fmt: str, case_ids: list[str], liver_id: int | None = None):
    """The cases ``case_ids``, one at a time; ``liver_id`` (the source id the label map sends to the
    liver) is checked against the data after the last case: the liver must be the largest organ."""
    counts: Counter[int] = Counter()
    for cid in sorted(set(case_ids)):
        case = load_transunet_case(root, cid)
        values, n = np.unique(case.label, return_counts=True)
        counts.update(dict(zip(values.tolist(), n.tolist())))
        yield case
    if liver_id is not None:
        check_label_order(dict(counts), liver_id, str(root))


def count_cases(path: Path, fmt: str = "transunet") -> int:
    """Number of cases, from file names only."""
    return len(transunet_case_ids(path))
