"""KiTS19's and LiTS's file names: matched by their reader (:mod:`hkd.data.readers.kits19_lits`), written by
the phantom and by the KiTS19 download. Standard library only: the source registry names the phantom's files
with it, and the phantom's job imports it without any reader.

``number`` is a case's number as its file name spells it (KiTS19: five digits; LiTS: no padding); ``ending``
``.nii.gz`` or ``.nii``.
"""

from __future__ import annotations

KITS19_DIGITS = 5  # case_00000 ...
LITS_DIGITS = 3  # the case ids hkd gives LiTS cases: 000 ...


def kits19_image(number: str, ending: str = ".nii.gz") -> str:
    """A KiTS19 case's imaging, relative to the dataset folder (POSIX)."""
    return f"case_{number}/imaging{ending}"


def kits19_label(number: str, ending: str = ".nii.gz") -> str:
    """A KiTS19 case's segmentation, in its imaging's folder."""
    return f"case_{number}/segmentation{ending}"


def lits_image(number: str, ending: str = ".nii") -> str:
    """A LiTS case's volume, relative to its batch folder."""
    return f"volume-{number}{ending}"


def lits_label(number: str, ending: str = ".nii") -> str:
    """A LiTS case's segmentation, beside its volume."""
    return f"segmentation-{number}{ending}"
