"""The study's data source as the data rules need it: which source ``data.source`` is, how its cases are
read, and which files and folders the rules take in (``hkd/data/sources.py`` describes every source).
Standard library only (Snakemake reads it when it parses the workflow).
"""

from __future__ import annotations

import os

from hkd.data import sources
from hkd.study.layout import Layout


def folder_files(folder: str | None) -> list[str]:
    """The files under a folder of cases, sorted, hidden ones left out (a KiTS19 clone's .git holds no cases);
    none without the folder."""
    if folder is None or not os.path.isdir(folder):
        return []
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(os.path.join(parent, f) for f in files if not f.startswith("."))
    return sorted(found)


class DataSource:
    """The data source of a validated config's ``data`` section, its outputs under ``layout``."""

    def __init__(self, data: dict, layout: Layout):
        self.data = data
        self.layout = layout
        self.source = sources.source_of(data)
        self.format = sources.case_format(data)  # hkd split/prepare --format
        self.reader = sources.FORMATS[self.format]  # the module that reads the case files
        self.packed = sources.packed(data)  # zip: extracted by the extract rule first
        self.downloads = sources.downloads(data)
        # What `hkd download` writes: the downloaded archive, or the downloaded cases' folder.
        self.downloaded = layout.download(data["source"], archive=self.packed == "zip")
        # The zip the extract rule unpacks, downloaded or the user's.
        self.archive = self.downloaded if self.downloads else data["path"]
        # Wildcard constraint of the extract rule: the sources that may come as a zip.
        self.extracted = "|".join(s.name for s in sources.SOURCES.values() if s.packed in ("zip", "either"))

    def raw_source(self) -> str:
        """The folder that holds the source cases."""
        if self.source.name == "phantom":
            return self.layout.phantom
        if self.packed == "zip":
            return self.layout.extracted(self.source.name)
        return self.downloaded if self.downloads else self.data["path"]

    def source_files(self) -> list[str]:
        """The files of a user's source folder, as inputs: a folder's own mtime misses a label fixed in
        place, and a new or removed file changes the set of inputs, which reruns too."""
        return folder_files(sources.user_folder(self.data))

    def split_file(self) -> str | list:
        """The split file of preset 'file', an input of the split rule (editing it reruns the split)."""
        split = self.data["split"]
        return split["file"] if split["preset"] == "file" else []


class ExternalCohort:
    """The cohort ``data.external`` names (a validated config's ``data`` section), only evaluated: where its
    cases come from and how they are read; false (``bool``) without one."""

    def __init__(self, data: dict, layout: Layout):
        kind = sources.external_kind(data)
        self.spec = None if kind == "none" else data["external"]
        self.layout = layout
        self.generated = kind == "phantom"
        if not self.spec:
            self.format = None
        elif self.generated:  # written in the study's phantom layout, read by that layout's reader
            self.format = sources.case_format({"source": "phantom", "phantom": data["phantom"]})
        else:  # a folder (its path checked with the config: hkd.config_checks)
            self.format = self.spec["format"]

    def __bool__(self) -> bool:
        return bool(self.spec)

    def source(self) -> str:
        """The folder that holds the cohort's cases."""
        return self.layout.external_phantom if self.generated else self.spec["path"]

    def source_files(self) -> list[str]:
        """A folder cohort's files, as inputs (a changed file prepares it again), hidden ones left out."""
        return [] if not self.spec or self.generated else folder_files(self.spec["path"])

