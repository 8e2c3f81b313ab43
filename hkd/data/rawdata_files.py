"""The Synapse RawData file names (``Training/img/imgNNNN.nii.gz``, ``Training/label/labelNNNN.nii.gz``):
matched by its reader (:mod:`hkd.data.readers.rawdata`), written by the phantom. Standard library only: the
source registry names the phantom's files with it."""

from __future__ import annotations

IMAGES = "Training/img"
LABELS = "Training/label"
DIGITS = 4  # case ids: 0001 ...


def image_file(number: str, ending: str = ".nii.gz") -> str:
    """A case's image file name (in :data:`IMAGES`)."""
    return f"img{number}{ending}"


def label_file(number: str, ending: str = ".nii.gz") -> str:
    """A case's label file name (in :data:`LABELS`)."""
    return f"label{number}{ending}"
