"""The record of how a prepared dataset's slices were made, which travels with every model trained on it.

:func:`record` turns a prepared dataset's description (``dataset.json``) into the JSON record a checkpoint
stores under ``preprocessing``; :mod:`hkd.infer.preprocessing` reads and checks it back when a model is
applied to a new scan.
"""

from __future__ import annotations

ORIENTATION = "hkd-display: axes (z, row, column); anterior at the top, patient's right on the left, superior at high z"
VERSION = 1


def record(meta: dict) -> dict:
    """The preprocessing record of a prepared dataset's description (``dataset.json``)."""
    return {
        "version": VERSION,
        "hu_window": [float(v) for v in meta["hu_window"]],
        "scale": [float(v) for v in meta.get("scale", (0.0, 1.0))],
        "image_size": int(meta["image_size"]),
        "orientation": ORIENTATION,
        "classes": [str(c) for c in meta["classes"]],
        "label_map": {str(k): int(v) for k, v in (meta.get("label_map") or {}).items()},
        "task": str(meta.get("task", "organs")),
    }
