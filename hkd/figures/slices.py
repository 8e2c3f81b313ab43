"""Which validation slices the figures show, and which organ each latent cell holds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from hkd.data.dataset import SliceSet


def class_counts(labels: np.ndarray, n_classes: int, chunk: int = 64) -> np.ndarray:
    """Pixel count of every class in every slice: (N, n_classes) from (N, S, S) labels."""
    labels = np.asarray(labels)
    out = np.zeros((len(labels), n_classes), dtype=np.int64)
    for start in range(0, len(labels), chunk):
        block = labels[start:start + chunk].reshape(min(chunk, len(labels) - start), -1).astype(np.int64)
        offsets = block + n_classes * np.arange(len(block))[:, None]
        out[start:start + len(block)] = np.bincount(offsets.ravel(), minlength=len(block) * n_classes).reshape(
            len(block), n_classes)
    return out


def select_slices(data: SliceSet, selection: str | Sequence[Sequence], n_slices: int, n_classes: int,
                  organ_ids: Sequence[int] | None = None) -> list[int]:
    """Row indices of the slices to show.

    ``selection`` is a list of (case, slice index) pairs, or 'coverage': the ``n_slices`` slices
    showing the most of ``organ_ids`` (default all foreground classes; ties go to the larger organ
    area, then to the lower case id and slice index), taken from as many patients as possible: the
    best slice of each case first, then each case's second best, and so on (neighbouring slices of
    one patient look alike).
    """
    if isinstance(selection, str):
        if selection != "coverage":
            raise ValueError(f"slice selection must be 'coverage' or a list of (case, slice) pairs, got {selection!r}")
        counts = class_counts(data.label.numpy(), n_classes)
        ids = list(organ_ids) if organ_ids else list(range(1, n_classes))
        present = (counts[:, ids] > 0).sum(1)
        area = counts[:, ids].sum(1)
        key = lambda i: (-present[i], -area[i], data.case[i], int(data.index[i]))
        rank_in_case, seen = {}, Counter()
        for i in sorted(range(len(data)), key=key):
            rank_in_case[i] = seen[data.case[i]]
            seen[data.case[i]] += 1
        order = sorted(range(len(data)), key=lambda i: (rank_in_case[i], key(i)))
        return order[:max(0, n_slices)]
    where = {(str(c), int(i)): row for row, (c, i) in enumerate(zip(data.case, data.index))}
    rows = []
    for pair in selection:
        case, index = pair
        key = (str(case), int(index))
        if key not in where:
            raise ValueError(f"slice {key[0]}:{key[1]} is not in the validation set")
        rows.append(where[key])
    return rows


def resolve_organs(organs: Sequence[str] | None, classes: list[str]) -> list[int] | None:
    """Class ids of the named organs (None stays None)."""
    if organs is None:
        return None
    unknown = [o for o in organs if o not in classes[1:]]
    if unknown:
        raise ValueError(f"unknown organ(s) {unknown}; known: {classes[1:]}")
    return [classes.index(o) for o in organs]


def cell_organs(labels: np.ndarray, grid: tuple[int, int], n_classes: int, min_share: float = 0.1) -> np.ndarray:
    """The organ in each cell of a (h, w) grid over (R, S, S) labels, flattened to (R*h*w,).

    A cell is labelled with the organ covering most of its pixels when that organ covers at least
    ``min_share`` of the cell, and background otherwise. (A majority vote over all classes labels
    nearly every cell background: at 48 px a latent cell is 16x16 pixels, larger than most organs.)
    """
    r, s1, s2 = labels.shape
    h, w = grid
    if s1 % h or s2 % w:
        raise ValueError(f"label size {(s1, s2)} is not a multiple of the latent grid {grid}")
    cells = labels.reshape(r, h, s1 // h, w, s2 // w).transpose(0, 1, 3, 2, 4).reshape(r * h * w, -1)
    counts = class_counts(cells[:, None, :], n_classes)[:, 1:]
    organ = counts.argmax(1) + 1
    return np.where(counts.max(1) >= min_share * cells.shape[1], organ, 0)
