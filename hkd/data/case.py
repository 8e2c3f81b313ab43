"""What every source reader returns: a case's volumes in the display orientation, or where its files lie.

The display orientation (axes z, row, column; anterior at the top, the patient's right on the left,
superior at high z) is described in :mod:`hkd.data.nifti`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Case:
    case_id: str
    image: np.ndarray  # (D, H, W); HU (float32) or already scaled to [0, 1]
    label: np.ndarray  # (D, H, W) uint8, source label ids
    spacing: tuple[float, float, float]  # mm along (z, row, column)
    scaled: bool = False  # True when the image is already windowed to [0, 1]
    source: str = ""  # the file the label came from, for error messages


@dataclass(frozen=True)
class RawCase:
    case_id: str
    image_path: Path
    label_path: Path
