"""What a prepared dataset holds, per split: cases, slices, and how much of each class there is.

A reader checks this before trusting a verdict: an organ absent from a split, or a split of a few
cases, shows here before any training. Training slices are counted from ``train.h5`` (at the training
size); validation and test cases from their volumes (at native resolution).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from hkd.errors import DataError
from hkd.data.dataset import read_meta
from hkd.data.split import PARTS


def _label_arrays(prepared: Path, part: str, cases: list[str]):
    """(case id, label array) for every case of ``part``."""
    if part == "train":
        path = prepared / "train.h5"
        try:
            with h5py.File(path, "r") as f:
                labels, owner = f["label"][()], np.array([c.decode() if isinstance(c, bytes) else str(c)
                                                          for c in f["case"][()]])
        except (OSError, KeyError) as exc:
            raise DataError(f"{path}: not a prepared slice file ({exc})") from exc
        for case in cases:
            yield case, labels[owner == case]
        return
    for case in cases:
        path = prepared / "volumes" / f"{case}.h5"
        try:
            with h5py.File(path, "r") as f:
                yield case, f["label"][()]
        except (OSError, KeyError) as exc:
            raise DataError(f"{path}: not a prepared volume ({exc})") from exc


def data_summary(prepared: str | Path) -> pd.DataFrame:
    """One row per (split, class): cases and slices of the split, the cases holding the class and the
    class's share of the split's pixels (percent)."""
    prepared = Path(prepared)
    meta = read_meta(prepared)
    classes, split = list(meta["classes"]), meta["split"]
    rows = []
    for part in PARTS:
        cases = list(split.get(part, []))
        counts = np.zeros(len(classes), dtype=np.int64)
        holding = np.zeros(len(classes), dtype=np.int64)
        slices = 0
        for _, label in _label_arrays(prepared, part, cases):
            per_class = np.bincount(label.ravel().astype(np.int64), minlength=len(classes))[:len(classes)]
            counts += per_class
            holding += per_class > 0
            slices += label.shape[0]
        total = max(int(counts.sum()), 1)
        for c, name in enumerate(classes):
            rows.append({"split": part, "cases": len(cases), "slices": slices, "class": name,
                         "cases_with_class": int(holding[c]), "pixel_percent": 100.0 * counts[c] / total})
    return pd.DataFrame(rows)


def summary_display(summary: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The summary as one row per class (cases holding it and pixel share, per split) and a one-line
    description of the splits."""
    parts = list(dict.fromkeys(summary["split"]))
    wide = pd.DataFrame({"class": list(dict.fromkeys(summary["class"]))})
    for part in parts:
        rows = summary[summary["split"] == part].set_index("class").loc[wide["class"]]
        wide[f"{part} cases with class"] = rows["cases_with_class"].to_numpy()
        wide[f"{part} pixel %"] = rows["pixel_percent"].to_numpy()
    first = summary.drop_duplicates("split").set_index("split")
    line = "; ".join(f"{p}: {first.loc[p, 'cases']} cases, {first.loc[p, 'slices']} slices" for p in parts)
    return wide, line
