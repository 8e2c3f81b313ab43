"""The study's "global context" number: the share of Grad-CAM mass outside the dilated organ.

For a fixed, seeded sample of validation slices, every model's Grad-CAM map for every organ present
in the slice's ground truth is reduced to :func:`~hkd.explain.attribution.outside_mass`. A student
whose share is higher than the scratch student's draws on more context beyond the organ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hkd.data.dataset import load_slices, read_meta
from hkd.explain.attribution import gradcam, outside_mass
from hkd.models import gradcam_layer
from hkd.models.checkpoint import load_model

COLUMNS = ["model", "method", "width", "seed", "case", "slice", "organ", "outside_mass"]


def sample_slices(labels: np.ndarray, n_slices: int, seed: int) -> list[int]:
    """Up to ``n_slices`` indices of slices with at least one organ, drawn with ``seed``, sorted."""
    candidates = np.flatnonzero(labels.reshape(len(labels), -1).max(axis=1) > 0)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(candidates, size=min(n_slices, len(candidates)), replace=False)
    return sorted(int(i) for i in chosen)


def context_table(prepared: str | Path, runs: list[dict], *, dilation: int, n_slices: int,
                  seed: int = 0) -> pd.DataFrame:
    """One row per run, slice and organ. ``runs`` items: model, method, width, seed, checkpoint."""
    classes = read_meta(prepared)["classes"]
    data = load_slices(prepared, "val")
    labels = data.label.numpy()
    rows = []
    for idx in sample_slices(labels, n_slices, seed):
        present = [c for c in np.unique(labels[idx]).tolist() if c > 0]
        for run in runs:
            if "_model" not in run:
                run["_model"], spec = load_model(run["checkpoint"])
                run["_layer"] = gradcam_layer(spec)
            for c in present:
                heat = gradcam(run["_model"], data.image[idx:idx + 1], c, run["_layer"])
                rows.append({"model": run["model"], "method": run["method"], "width": run["width"],
                             "seed": run["seed"], "case": data.case[idx], "slice": int(data.index[idx]),
                             "organ": classes[c], "outside_mass": outside_mass(heat, labels[idx] == c, dilation)})
    return pd.DataFrame(rows, columns=COLUMNS)
