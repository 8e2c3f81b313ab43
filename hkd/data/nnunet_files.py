"""The nnU-Net raw dataset's file names and description (``dataset.json``): read by its reader
(:mod:`hkd.data.readers.nnunet`), written by the phantom. Standard library only: the phantom's job imports
it without any reader, and the source registry names the phantom's files with it."""

from __future__ import annotations

DESCRIPTION = "dataset.json"
IMAGES = "imagesTr"
LABELS = "labelsTr"
CHANNEL = "0000"  # the channel suffix of a case's (only) image
ENDINGS = (".nii.gz", ".nii")


def image_name(case_id: str, ending: str = ".nii.gz") -> str:
    """A case's image, relative to the dataset folder (POSIX)."""
    return f"{IMAGES}/{case_id}_{CHANNEL}{ending}"


def label_name(case_id: str, ending: str = ".nii.gz") -> str:
    """A case's label map, relative to the dataset folder (POSIX)."""
    return f"{LABELS}/{case_id}{ending}"


def description(labels: dict[str, int], n_cases: int, name: str = "hkd phantom") -> dict:
    """The ``dataset.json`` of a CT dataset with these ``labels`` (name -> id) and ``n_cases`` training cases."""
    return {"name": name, "channel_names": {"0": "CT"}, "labels": dict(labels), "numTraining": n_cases,
            "file_ending": ".nii.gz"}
