"""The registry of data sources: one entry per ``data.source`` holds what the project knows of it.

A study's ``data.source`` (:data:`SOURCES`) says where its cases come from: generated, downloaded, or
the user's folder or zip (``data.path``). Its entry gives the format of its case files (read by the
reader of that format, :data:`FORMATS`, in :mod:`hkd.data.readers`), whether and how ``hkd download``
fetches it (:class:`Download`; its downloader is ``hkd/data/downloaders/<name>.py``), the "data source"
line of the report's first page, and, for a layout the phantom imitates, the files the phantom writes
(:class:`PhantomLayout`). The CLI's choices, the workflow's rules (``workflow/rules/common.smk``) and
the config checks read this table, so a new downloadable source is its downloader and one entry here.

Standard library only, and it imports no reader or downloader: Snakemake reads it when it parses the
workflow, and a job that reads it (the phantom's) runs no reader. Every download runs under the one
time limit ``data.download_timeout`` (the download rule's ``--timeout``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hkd.data import kits19_lits_files as kits, nnunet_files, rawdata_files as rawdata
from hkd.errors import DataError

#: Format of the case files -> the module that reads them (``hkd split/prepare --format``).
FORMATS = {
    "rawdata": "hkd.data.readers.rawdata",
    "kits19": "hkd.data.readers.kits19_lits",
    "lits": "hkd.data.readers.kits19_lits",
    "transunet": "hkd.data.readers.transunet",
    "nnunet": "hkd.data.readers.nnunet",
}


@dataclass(frozen=True)
class Download:
    """How ``hkd download --source NAME`` fetches a source that has no ``data.path``."""

    arguments: Callable[[dict], str]  # its options of `hkd download`, from the data config section
    describe: Callable[[dict], str]  # the report's data-source line when downloaded
    cases: Callable[[dict], int] | None = None  # the cases it fetches, from the config (None: counted after)


@dataclass(frozen=True)
class PhantomLayout:
    """A source's layout written by the phantom (``hkd phantom --layout NAME``): for its case ``index``, the
    case id the source's reader gives it and the image and label paths (relative, POSIX)."""

    case_id: Callable[[int], str]
    image: Callable[[int, str], str]  # (index, case id) -> path
    label: Callable[[int, str], str]
    tumours: str | None = None  # the organ its tumour label lies in (None: the layout has no tumour label)


@dataclass(frozen=True)
class Source:
    """What one ``data.source`` is."""

    name: str
    format: str | None  # format of its case files (None: the phantom's, from its layout)
    path: str  # data.path: "required", "optional" (downloaded without one) or "none"
    packed: str  # what data.path (or the download) is: "zip" (extracted first), "folder", or "either"
    description: str
    download: Download | None = None
    phantom: PhantomLayout | None = None  # the phantom's layout of this name


def _describe_phantom(data: dict) -> str:
    phantom = data["phantom"]
    line = f"phantom: {phantom['cases']} generated abdominal CT cases (seed {phantom['seed']})"
    if phantom["layout"] != "synapse":
        line += f", {phantom['layout']} layout, {'with tumours' if phantom['tumours'] is not None else 'no tumours'}"
    return line


def _synapse_arguments(data: dict) -> str:
    # no --source: synapse is the first downloadable source, the default of `hkd download --source`
    return f"--entity {data['synapse_entity']}" + (f" --md5 {data['md5']}" if data["md5"] else "")


def _kits19_arguments(data: dict) -> str:
    kits = data["kits19"]
    return (f"--source kits19 --cases {kits['cases']} --imaging-url '{kits['imaging_url']}'"
            f" --labels-url '{kits['labels_url']}'")


SOURCES = {s.name: s for s in (
    Source("phantom", None, "none", "folder", "generated abdominal CT cases (hkd phantom)"),
    Source("synapse", "rawdata", "none", "zip", "the Synapse RawData.zip, downloaded",
           download=Download(_synapse_arguments, lambda d: f"synapse: {d['synapse_entity']}"),
           phantom=PhantomLayout(lambda i: f"{i + 1:0{rawdata.DIGITS}d}",
                                 lambda i, cid: f"{rawdata.IMAGES}/{rawdata.image_file(cid)}",
                                 lambda i, cid: f"{rawdata.LABELS}/{rawdata.label_file(cid)}")),
    Source("zip", "rawdata", "required", "zip", "a RawData.zip"),
    Source("folder", "rawdata", "required", "folder", "a RawData folder"),
    Source("transunet", "transunet", "required", "folder", "a TransUNet-preprocessed folder"),
    Source("kits19", "kits19", "optional", "either", "a KiTS19 folder or zip, or downloaded",
           download=Download(_kits19_arguments, lambda d: f"kits19: downloaded, cases 0-{d['kits19']['cases'] - 1}",
                             cases=lambda d: d["kits19"]["cases"]),
           phantom=PhantomLayout(lambda i: f"{i:0{kits.KITS19_DIGITS}d}", lambda i, cid: kits.kits19_image(cid),
                                 lambda i, cid: kits.kits19_label(cid), tumours="kidney")),
    Source("lits", "lits", "required", "either", "the LiTS folder or zip you downloaded: LiTS is "
           "distributed through CodaLab and Academic Torrents, which hkd cannot download",
           phantom=PhantomLayout(lambda i: f"{i:0{kits.LITS_DIGITS}d}", lambda i, cid: kits.lits_image(str(i)),
                                 lambda i, cid: kits.lits_label(str(i)), tumours="liver")),
    Source("nnunet", "nnunet", "required", "folder", f"an nnU-Net raw dataset folder ({nnunet_files.DESCRIPTION}, "
           f"{nnunet_files.IMAGES}, {nnunet_files.LABELS}): CT, one channel, its label map from dataset.json's names",
           phantom=PhantomLayout(lambda i: f"hkd_{i:04d}", lambda i, cid: nnunet_files.image_name(cid),
                                 lambda i, cid: nnunet_files.label_name(cid))),
)}


def downloadable() -> list[str]:
    """The sources ``hkd download`` fetches, the first one its default ``--source``."""
    return [name for name, s in SOURCES.items() if s.download]


def phantom_layouts() -> list[str]:
    """The phantom's layouts (``hkd phantom --layout``, ``data.phantom.layout``), the first one its default."""
    return [name for name, s in SOURCES.items() if s.phantom]


def source_of(data: dict) -> Source:
    """The :class:`Source` of a ``data`` config section."""
    if data["source"] not in SOURCES:
        raise DataError(f"config key data.source: unknown source '{data['source']}'; known: {', '.join(SOURCES)}")
    return SOURCES[data["source"]]


def case_format(data: dict) -> str:
    """The format of the source's case files (``hkd split/prepare --format``)."""
    source = source_of(data)
    return source.format or SOURCES[data["phantom"]["layout"]].format


def downloads(data: dict) -> bool:
    """Whether the workflow downloads the source."""
    return source_of(data).download is not None and not data["path"]


def download_arguments(data: dict) -> str:
    """The options of ``hkd download`` that fetch the source, from its config section; empty when the
    workflow does not download it (``--out`` and ``--timeout``, i.e. ``data.download_timeout``, are the
    rule's)."""
    return source_of(data).download.arguments(data) if downloads(data) else ""


def external_kind(data: dict) -> str:
    """What ``data.external`` evaluates: ``none``, ``phantom`` (the study's phantom on another scanner) or
    ``folder``; ``auto`` (the default config's) is the phantom cohort when the study's source is the phantom,
    none otherwise."""
    kind = (data.get("external") or {}).get("source", "none")
    if kind == "auto":
        return "phantom" if data["source"] == "phantom" else "none"
    return kind


def describe(data: dict) -> str:
    """The "data source" line of the report's first page: the source and where its cases come from."""
    source = source_of(data)
    if source.name == "phantom":
        return _describe_phantom(data)
    if downloads(data):
        return source.download.describe(data)
    return f"{source.name}: {data['path']}"


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


def phantom_layout(name: str) -> PhantomLayout:
    """The phantom's layout ``name`` (``data.phantom.layout``)."""
    if name not in phantom_layouts():
        raise DataError(f"data.phantom.layout: unknown layout '{name}'; known: {', '.join(phantom_layouts())}")
    return SOURCES[name].phantom


def phantom_files(layout: str, index: int) -> tuple[str, str, str]:
    """The case id, image path and label path of the phantom's case ``index`` in ``layout``."""
    files = phantom_layout(layout)
    case_id = files.case_id(index)
    return case_id, files.image(index, case_id), files.label(index, case_id)


def check_phantom_tumours(phantom: dict) -> None:
    """The layout is known, and tumours (``data.phantom.tumours``) have a layout with a tumour label;
    ValueError naming the key."""
    if phantom["tumours"] is not None and not phantom_layout(phantom["layout"]).tumours:
        others = " or ".join(f"{name} ({SOURCES[name].phantom.tumours} tumours)" for name in phantom_layouts()
                             if SOURCES[name].phantom.tumours)
        raise ValueError(f"config key data.phantom.tumours: the {phantom['layout']} layout has no tumour label; "
                         f"set data.phantom.layout to {others}")
