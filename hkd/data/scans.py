"""Scans by name: what counts as a NIfTI file, a case's name, and the scans of a folder by case, the one
listing ``hkd predict`` and the workflow's ``deploy.scans`` share (standard library only: the workflow
plans one job per scan from it).
"""

from __future__ import annotations

from pathlib import Path

from hkd.errors import DataError


def is_nifti_name(path: str | Path) -> bool:
    return Path(path).name.lower().endswith((".nii", ".nii.gz"))


def case_name(path: str | Path) -> str:
    """The case's name: its file name without ``.nii`` or ``.nii.gz``."""
    name = Path(path).name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name[: -len(".nii")]


def folder_scans(folder: Path, flag: str = "--input") -> dict[str, Path]:
    """Case name -> scan of the folder's .nii/.nii.gz files (not hidden, sorted); ``flag`` names the folder in
    the errors."""
    if not folder.is_dir():
        raise DataError(f"{flag} {folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_nifti_name(p) and not p.name.startswith("."))
    if not files:
        raise DataError(f"{flag} {folder}: no .nii or .nii.gz files in the folder")
    seen: dict[str, Path] = {}
    for f in files:
        if case_name(f) in seen:
            raise DataError(f"{flag} {f}: case {case_name(f)} is also stored as {seen[case_name(f)].name}; "
                            "keep one of the two files")
        seen[case_name(f)] = f
    return seen
