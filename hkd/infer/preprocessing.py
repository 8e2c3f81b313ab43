"""What a model's input was made of, recorded with the model so that a new scan is prepared the same way.

A checkpoint written by ``hkd train`` (and an ONNX file written by ``hkd export``) holds the record as
JSON under ``preprocessing``:

* ``hu_window`` and ``scale``: HU clipped to the window, then mapped linearly onto ``scale``;
* ``image_size``: slices padded to square (with the low end of ``scale``) and resized to this size
  (bicubic, antialiased), as :mod:`hkd.data.preprocess` does;
* ``orientation``: :data:`hkd.data.preprocessing_record.ORIENTATION`, the display orientation of
  :mod:`hkd.data.nifti` (axial slices, anterior at the top, the patient's right on the left, superior at
  high z), reached from any affine;
* ``classes``, ``label_map`` (source label id -> class id) and ``task``.

The record is made by :func:`hkd.data.preprocessing_record.record`, in the data layer, where training
takes it from; this module reads it back and checks it.
"""

from __future__ import annotations

import json
from pathlib import Path

from hkd.data.preprocessing_record import record
from hkd.errors import DataError

REQUIRED = ("image_size", "hu_window", "classes")
#: The options that give an older checkpoint its preprocessing, in the one line that asks for them.
HINT = ("pass --preprocessing with the dataset.json of the prepared data it was trained on (e.g. "
        "results/default/prepared/dataset.json), or inline JSON with image_size, hu_window, scale and classes")


def checked(prep, where: str) -> dict:
    """``prep`` (a record or a ``dataset.json``) completed and checked; errors name ``where``."""
    if not isinstance(prep, dict):
        raise DataError(f"{where}: the preprocessing is not a JSON object")
    missing = [k for k in REQUIRED if k not in prep]
    if missing:
        raise DataError(f"{where}: the preprocessing lacks {', '.join(missing)}; {HINT}")
    try:
        out = record(prep)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: unusable preprocessing ({exc})") from None
    lo, hi = out["hu_window"]
    if len(out["hu_window"]) != 2 or not hi > lo:
        raise DataError(f"{where}: hu_window {out['hu_window']} is not [low, high]")
    if out["image_size"] <= 0 or out["image_size"] % 16:
        raise DataError(f"{where}: image_size {out['image_size']} is not a positive multiple of 16")
    if len(out["classes"]) < 2:
        raise DataError(f"{where}: classes {out['classes']} name fewer than two classes")
    return out


def of_checkpoint(state: dict, path: str | Path, given: dict | None = None) -> dict:
    """The preprocessing a checkpoint's ``state`` records, or ``given`` for a checkpoint written before it
    was recorded (which otherwise raises one line naming the options to pass)."""
    if given is not None:
        return checked(given, "--preprocessing")
    if "preprocessing" not in state:
        raise DataError(f"{path}: written before checkpoints recorded their preprocessing; {HINT}")
    try:
        prep = json.loads(state["preprocessing"])
    except (TypeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: its 'preprocessing' is not JSON ({exc}); {HINT}") from None
    return checked(prep, str(path))
