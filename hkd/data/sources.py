"""The registry of data sources and of the readers of their case files; imports no reader until asked.

A study's ``data.source`` (:data:`SOURCES`) says where its cases come from: generated, downloaded, or
the user's folder or zip (``data.path``). Its cases are read by the reader of one format
(:data:`FORMATS`: format -> module), imported only when a case is listed or read, so a job runs the
reader of its own source and no other (``hkd/workflow_deps.py``). Every reader module offers
``list_cases``, ``iter_cases`` and ``count_cases``. The workflow's rules read this table too.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hkd.errors import DataError

#: Format of the case files -> the module that reads them.
FORMATS = {
    "rawdata": "hkd.data.cases",  # Synapse RawData: Training/img/imgNNNN.nii.gz, Training/label/labelNNNN.nii.gz
    "kits19": "hkd.data.layouts",
    "lits": "hkd.data.layouts",
    "transunet": "hkd.data.transunet_format",
}
#: Phantom layout -> the format of the files the phantom writes in it (``hkd phantom --layout``).
PHANTOM_FORMATS = {"synapse": "rawdata", "kits19": "kits19", "lits": "lits"}


@dataclass(frozen=True)
class Source:
    """What one ``data.source`` is."""

    name: str
    format: str | None  # format of its case files (None: the phantom's, from its layout)
    path: str  # data.path: "required", "optional" (kits19: downloaded without one) or "none"
    packed: str  # what data.path (or the download) is: "zip" (extracted first), "folder", or "either"
    download: bool  # fetched by `hkd download` (kits19: only without data.path)
    description: str


SOURCES = {s.name: s for s in (
    Source("phantom", None, "none", "folder", False, "generated abdominal CT cases (hkd phantom)"),
    Source("synapse", "rawdata", "none", "zip", True, "the Synapse RawData.zip, downloaded"),
    Source("zip", "rawdata", "required", "zip", False, "a RawData.zip"),
    Source("folder", "rawdata", "required", "folder", False, "a RawData folder"),
    Source("transunet", "transunet", "required", "folder", False, "a TransUNet-preprocessed folder"),
    Source("kits19", "kits19", "optional", "either", True, "a KiTS19 folder or zip, or downloaded"),
    Source("lits", "lits", "required", "either", False, "the LiTS folder or zip you downloaded: LiTS is "
           "distributed through CodaLab and Academic Torrents, which hkd cannot download"),
)}


def source_of(data: dict) -> Source:
    """The :class:`Source` of a ``data`` config section."""
    if data["source"] not in SOURCES:
        raise DataError(f"config key data.source: unknown source '{data['source']}'; known: {', '.join(SOURCES)}")
    return SOURCES[data["source"]]


def case_format(data: dict) -> str:
    """The format of the source's case files (``hkd split/prepare --format``)."""
    source = source_of(data)
    return source.format or PHANTOM_FORMATS[data["phantom"]["layout"]]


def downloads(data: dict) -> bool:
    """Whether the workflow downloads the source."""
    return source_of(data).download and not data["path"]


def packed(data: dict) -> str:
    """'zip' when the source is a zip the workflow extracts (downloaded or the user's), else 'folder'."""
    source = source_of(data)
    if source.packed == "either":
        return "zip" if data["path"] and Path(data["path"]).is_file() else "folder"
    return source.packed


def user_folder(data: dict) -> str | None:
    """The user's folder of case files (``data.path`` when it is a folder), else None."""
    if source_of(data).path != "none" and packed(data) == "folder" and data["path"]:
        return data["path"]
    return None


def reader(fmt: str):
    """The module that reads files of format ``fmt`` (imported now)."""
    if fmt not in FORMATS:
        raise DataError(f"data.format: unknown format '{fmt}' ({', '.join(FORMATS)})")
    return importlib.import_module(FORMATS[fmt])


def list_cases(root: str | Path, fmt: str) -> dict[str, int]:
    """Case id -> number of axial slices, from headers only where possible."""
    return reader(fmt).list_cases(root, fmt)


def iter_cases(root: str | Path, fmt: str, case_ids: list[str], liver_id: int | None = None) -> Iterator:
    """Yield validated cases one at a time (so memory holds one case).

    For TransUNet imports, ``liver_id`` (the source id the label map sends to the liver) is checked
    against the data after the last case: the liver must be the largest organ.
    """
    return reader(fmt).iter_cases(root, fmt, case_ids, liver_id)


def count_cases(path: str | Path, source: str) -> int | None:
    """Number of cases a source's folder or zip holds, from file names only (no file is read): for checks
    before any work starts. None when it does not exist yet (it is generated or downloaded by the workflow).
    """
    path = Path(path)
    if not path.exists():
        return None
    fmt = SOURCES[source].format or "rawdata"
    return reader(fmt).count_cases(path, fmt)
