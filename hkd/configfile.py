"""Configuration files read strictly: a key given twice in one mapping is an error naming the key, the
file and both lines (a plain YAML reader keeps the last silently); a YAML syntax error names the file,
line and column. The workflow reads every config file so (``workflow/rules/configfiles.smk``), as ``hkd``
reads a ``--params`` file. Only PyYAML is needed: every command that reads a file argument imports this.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml


class ConfigFileError(ValueError):
    """A configuration file that cannot be read as written; the message names the file and line."""


class _Duplicate(Exception):
    def __init__(self, key, first: int, again: int):
        super().__init__(key)
        self.key, self.first, self.again = key, first, again


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (merge keys ``<<`` aside)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _Duplicate(key, seen[key], line)
                    seen[key] = line
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    break
        return super().construct_mapping(node, deep)


def load_config_file(path: str | os.PathLike):
    """The content of the YAML (or JSON) file ``path``; raises :class:`ConfigFileError` naming the file, a
    key given twice and its lines, or where the YAML breaks."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except _Duplicate as dup:
        raise ConfigFileError(f"{path}: key {dup.key!r} is given twice in one mapping (lines {dup.first} and "
                              f"{dup.again}); a YAML reader would keep only the last, so remove one") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        hint = " (a tab: YAML indents with spaces only)" if "\\t" in problem or "\t" in problem else ""
        raise ConfigFileError(f"{path}: not valid YAML{where}: {problem}{hint}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
