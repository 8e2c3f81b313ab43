"""Preprocessing: window and scale HU, map labels, cut and resize axial slices, write the dataset.

The prepared dataset (the one format everything downstream reads) is a folder:

* ``train.h5`` / ``val.h5``: datasets ``image`` (N, S, S) float32 in the intensity range ``scale``
  ([0, 1] unless configured as [-1, 1]), ``label`` (N, S, S) uint8 class ids, ``case`` (N,) case ids
  and ``slice`` (N,) slice index within the case; chunked one slice per chunk and gzip-compressed.
  With the ``tumour`` task, ``train.h5`` holds only the slices whose ground truth shows a tumour.
* ``volumes/<case>.h5`` for validation and test cases: ``image`` (D, H, W) float32 in ``scale`` and
  ``label`` (D, H, W) uint8 at native resolution, attribute ``spacing`` (z, row, column) in mm.
* ``dataset.json``: classes, image size, window, scale, task, label map, split and slice counts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hkd.data.case import Case
from hkd.errors import DataError
from hkd.data.tasks import TUMOUR, check_task
from hkd.io import atomic_dir

SCALES = ((0.0, 1.0), (-1.0, 1.0))  # intensity ranges of the prepared images (data.scale)
H5_COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
# Native-resolution volumes are large; LZF (built into h5py) compresses them about 2x faster than gzip.
VOLUME_COMPRESSION = {"compression": "lzf"}


def window(image: np.ndarray, lo: float, hi: float, scale: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Clip HU to [lo, hi] and scale linearly to ``scale`` ([0, 1] or [-1, 1]; float32, in place when possible)."""
    if not hi > lo:
        raise DataError(f"data.hu_window: upper bound {hi} must exceed lower bound {lo}")
    out = np.asarray(image, dtype=np.float32)
    np.clip(out, lo, hi, out=out)
    out -= lo
    out *= 1.0 / (hi - lo)
    if tuple(scale) != (0.0, 1.0):
        out *= scale[1] - scale[0]
        out += scale[0]
    return out


def label_lookup(label_map: dict[int, int]) -> np.ndarray:
    """A 256-entry lookup table from source label ids to class ids; unmapped ids give 255."""
    table = np.full(256, 255, dtype=np.uint8)
    for src, dst in label_map.items():
        table[int(src)] = int(dst)
    return table


def map_labels(label: np.ndarray, table: np.ndarray, source: str) -> np.ndarray:
    """Map source ids through ``table``; ids missing from the map raise DataError naming ``source``."""
    mapped = table[label]
    if (mapped == 255).any():
        bad = sorted(set(np.unique(label[mapped == 255]).tolist()))
        raise DataError(f"{source}: label values {bad} are not in the configured label map (data.label_map)")
    return mapped


def pad_to_square(stack: np.ndarray, fill: float) -> np.ndarray:
    """Pad (D, H, W) slices symmetrically to square so resizing keeps the aspect ratio."""
    d, h, w = stack.shape
    size = max(h, w)
    if h == w:
        return stack
    top, left = (size - h) // 2, (size - w) // 2
    out = np.full((d, size, size), fill, dtype=stack.dtype)
    out[:, top:top + h, left:left + w] = stack
    return out


def resize_slices(stack: np.ndarray, size: int, kind: str, scale: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Resize (D, H, W) slices to (D, size, size): ``kind`` 'image' (bicubic, antialiased, clamped to the
    intensity range ``scale``) or 'label' (nearest)."""
    tensor = torch.from_numpy(np.ascontiguousarray(stack))[:, None]
    if tensor.shape[-1] == size and tensor.shape[-2] == size:
        return np.ascontiguousarray(stack)
    if kind == "image":
        out = F.interpolate(tensor, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        return out[:, 0].clamp_(scale[0], scale[1]).numpy()
    out = F.interpolate(tensor.to(torch.uint8), size=(size, size), mode="nearest-exact")
    return out[:, 0].numpy()


class SliceWriter:
    """Appends slices of successive cases to an HDF5 file, one chunk per slice."""

    def __init__(self, path: Path, size: int):
        self.file = h5py.File(path, "w")
        self.n = 0
        opts = dict(chunks=(1, size, size), **H5_COMPRESSION)
        self.image = self.file.create_dataset("image", (0, size, size), maxshape=(None, size, size),
                                              dtype="f4", **opts)
        self.label = self.file.create_dataset("label", (0, size, size), maxshape=(None, size, size),
                                              dtype="u1", **opts)
        self.case = self.file.create_dataset("case", (0,), maxshape=(None,), dtype=h5py.string_dtype())
        self.index = self.file.create_dataset("slice", (0,), maxshape=(None,), dtype="i4")

    def append(self, case_id: str, image: np.ndarray, label: np.ndarray, index: np.ndarray | None = None) -> None:
        """Append the slices of one case; ``index`` gives their positions in the case (default 0..D-1)."""
        d = image.shape[0]
        for ds in (self.image, self.label, self.case, self.index):
            ds.resize(self.n + d, axis=0)
        self.image[self.n:self.n + d] = image
        self.label[self.n:self.n + d] = label
        self.case[self.n:self.n + d] = [case_id] * d
        self.index[self.n:self.n + d] = np.arange(d, dtype=np.int32) if index is None else index
        self.n += d

    def close(self) -> None:
        self.file.close()


def write_volume(path: Path, image: np.ndarray, label: np.ndarray, spacing, case_id: str) -> None:
    """Store one native-resolution volume for volume-level evaluation."""
    with h5py.File(path, "w") as f:
        chunks = (1,) + image.shape[1:]
        f.create_dataset("image", data=image.astype(np.float32, copy=False), chunks=chunks, **VOLUME_COMPRESSION)
        f.create_dataset("label", data=label, chunks=chunks, **VOLUME_COMPRESSION)
        f.attrs["spacing"] = np.asarray(spacing, dtype=np.float64)
        f.attrs["case"] = case_id


def prepare_dataset(cases: Iterable[Case], split: dict, out_dir: str | Path, *, image_size: int,
                    hu_window: tuple[float, float], label_map: dict[int, int], classes: list[str],
                    scale: tuple[float, float] = (0.0, 1.0), task: str = "organs", progress: bool = True) -> dict:
    """Write the prepared dataset for ``cases`` (streamed one at a time) into ``out_dir`` atomically.

    ``split`` maps 'train'/'val'/'test' to case-id lists. Images are windowed to ``hu_window`` and
    scaled to ``scale``; with ``task`` 'tumour' only the training slices showing a tumour are kept.
    Returns the dataset description.
    """
    if image_size <= 0 or image_size % 16:
        raise DataError(f"data.image_size: {image_size} must be a positive multiple of 16")
    scale = tuple(float(v) for v in scale)
    if scale not in SCALES:
        raise DataError(f"data.scale: {list(scale)} is not one of {[list(s) for s in SCALES]}")
    check_task(task, classes)
    n_classes = len(classes)
    if max(label_map.values()) >= n_classes:
        raise DataError(f"data.label_map: class id {max(label_map.values())} has no name in data.classes")
    table = label_lookup(label_map)
    split_of = {cid: part for part, ids in split.items() for cid in ids}
    counts = {"train": 0, "val": 0, "test": 0}
    seen: set[str] = set()
    with atomic_dir(out_dir) as tmp:
        (tmp / "volumes").mkdir()
        writers = {part: SliceWriter(tmp / f"{part}.h5", image_size) for part in ("train", "val")}
        try:
            for case in tqdm(cases, desc="prepare", unit="case", disable=not progress):
                part = split_of.get(case.case_id)
                if part is None:
                    continue
                seen.add(case.case_id)
                image = case.image if case.scaled else window(case.image, *hu_window, scale)
                if case.scaled and scale != (0.0, 1.0):  # imports already scaled to [0, 1]
                    image = image * (scale[1] - scale[0]) + scale[0]
                label = map_labels(case.label, table, case.source or f"case {case.case_id}")
                n_slices = image.shape[0]
                if part in writers:
                    keep = np.arange(n_slices)
                    if part == "train" and task == "tumour":
                        keep = np.flatnonzero((label == classes.index(TUMOUR)).any(axis=(1, 2)))
                    if len(keep):
                        writers[part].append(case.case_id,
                                             resize_slices(pad_to_square(image[keep], scale[0]), image_size,
                                                           "image", scale),
                                             resize_slices(pad_to_square(label[keep], 0), image_size, "label"),
                                             keep)
                    n_slices = len(keep)
                if part in ("val", "test"):
                    write_volume(tmp / "volumes" / f"{case.case_id}.h5", image, label, case.spacing, case.case_id)
                counts[part] += n_slices
        finally:
            for w in writers.values():
                w.close()
        missing = sorted(set(split_of) - seen)
        if missing:
            raise DataError(f"split lists cases with no source data: {missing}")
        if task == "tumour" and split.get("train") and counts["train"] == 0:
            raise DataError(f"data.task: 'tumour' keeps the training slices that show a tumour, and none of the "
                            f"{len(split.get('train', []))} training cases has one")
        meta = {
            "classes": list(classes),
            "image_size": image_size,
            "hu_window": list(hu_window),
            "scale": list(scale),
            "task": task,
            "label_map": {str(k): int(v) for k, v in label_map.items()},
            "split": {k: list(v) for k, v in split.items()},
            "slices": counts,
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
