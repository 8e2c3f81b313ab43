"""Checks of a study configuration that its JSON schema cannot express; each error names the key.

The workflow runs them when it parses the configuration (``workflow/rules/common.smk``), before any
job. :func:`check_config` needs only the standard library; :func:`check_against_package` asks the
package itself (the method registry, the task and split rules, the source's case count) and needs
hkd's requirements installed.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from hkd.data.sources import check_phantom_tumours, downloads, external_kind, packed, source_of
from hkd.study.layout import Layout


# Config keys whose value is taken whole from the config that sets it, never merged key by key: a model
# spec (a MONAI teacher merged into the default's TransUNet would inherit its sizes). ``*``: any key.
WHOLE = (("teacher", "model"), ("students", "models", "*"))


def _whole(path: tuple) -> bool:
    return any(len(p) == len(path) and all(a in ("*", b) for a, b in zip(p, path)) for p in WHOLE)


def merge_config(base: dict, update: dict, _path: tuple = ()) -> dict:
    """``base`` updated in place with ``update``, nested dicts key by key (as Snakemake merges a
    ``--configfile`` into the config) except the model specs of :data:`WHOLE`, replaced whole; returns
    ``base``. The workflow applies it to Snakemake's merge again, so model specs are replaced there too."""
    for key, value in update.items():
        path = (*_path, key)
        if isinstance(value, dict) and isinstance(base.get(key), dict) and not _whole(path):
            merge_config(base[key], value, path)
        else:
            base[key] = copy.deepcopy(value)
    return base


def command_line_overrides(configfiles, values: dict | None) -> dict:
    """What ``--configfile`` (in order) and ``--config`` set, merged as :func:`merge_config` merges: each model
    spec whole, from the last that sets it (Snakemake merges them key by key). The files are read strictly
    (:func:`hkd.configfile.load_config_file`)."""
    from hkd.configfile import ConfigFileError, load_config_file

    merged: dict = {}
    for path in configfiles:
        content = load_config_file(path)
        if content is not None and not isinstance(content, dict):
            raise ConfigFileError(f"{path}: holds a {type(content).__name__}, not a mapping of config keys")
        merge_config(merged, content or {})
    return merge_config(merged, dict(values or {}))


def schema_error(cfg: dict, schema_path: str | Path) -> str | None:
    """The first schema violation of ``cfg`` as one line (the key and the rule it breaks), or None."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(cfg))
    if error is None:
        return None
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        key = ".".join([*map(str, error.absolute_path), extra[0]]) if extra else key
        broken = f"unknown key; known keys here: {sorted(error.schema.get('properties', {}))}"
    else:
        broken = f"{error.message} (schema rule '{error.validator}')"
    return f"config key {key}: {broken}"


def _decimal_integer(value, schema: dict, root: dict, path: tuple) -> tuple | None:
    """The path of the first value written as a decimal (``48.0``) where ``schema`` asks for an integer."""
    if "$ref" in schema:
        schema = root.get("$defs", {}).get(schema["$ref"].rsplit("/", 1)[-1], {})
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if isinstance(value, float) and "integer" in kinds and "number" not in kinds:
        return path
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            found = sub is not None and _decimal_integer(item, sub, root, (*path, key))
            if found:
                return found
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found = _decimal_integer(item, schema["items"], root, (*path, i))
            if found:
                return found
    return None


def check_whole_numbers(cfg: dict, schema_path: str | Path) -> None:
    """Refuse a whole number written as a decimal (``image_size: 48.0``): JSON Schema's ``integer`` accepts
    it, but the code it reaches (torch's sizes, Python's ranges) does not."""
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    path = _decimal_integer(cfg, schema, schema, ())
    if path:
        value = cfg
        for key in path:
            value = value[key]
        raise ValueError(f"config key {'.'.join(map(str, path))}: {value!r} must be written as a whole number "
                         f"({int(value)}), without a decimal point")


def check_config(cfg: dict) -> None:
    """Raise ValueError naming the key for what the schema cannot say."""
    data = cfg["data"]
    ratios = data["split"]["ratios"]
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"config key data.split.ratios: {ratios} must sum to 1")
    lo, hi = data["hu_window"]
    if not hi > lo:
        raise ValueError(f"config key data.hu_window: upper bound {hi} must exceed lower bound {lo}")
    n_classes = len(data["classes"])
    bad = {k: v for k, v in data["label_map"].items() if v >= n_classes}
    if bad:
        raise ValueError(
            f"config key data.label_map: class ids {sorted(set(bad.values()))} have no name in data.classes")
    source = source_of(data)
    if source.path == "required" and not data["path"]:
        raise ValueError(f"config key data.path: required for data.source '{source.name}' ({source.description})")
    if source.path != "none" and data["path"] and not os.path.exists(data["path"]):
        raise ValueError(f"config key data.path: {data['path']} does not exist (data.source '{source.name}')")
    phantom = data["phantom"]
    check_phantom_tumours(phantom)
    external, kind = data.get("external") or {}, external_kind(data)
    if kind == "phantom" and source.name != "phantom":
        raise ValueError(f"config key data.external.source: 'phantom' generates the study's phantom on another "
                         f"scanner, and data.source is '{source.name}'; set data.external.source to none, or to "
                         "folder with a path of cases")
    if kind == "folder" and not external.get("path"):
        raise ValueError("config key data.external.path: a folder cohort needs the folder of its cases")
    if kind == "folder" and not os.path.exists(external["path"]):
        raise ValueError(f"config key data.external.path: {external['path']} does not exist")
    if data["split"]["preset"] == "file" and not data["split"]["file"]:
        raise ValueError("config key data.split.file: required when data.split.preset is 'file'")
    students = cfg["students"]
    if not students["widths"] and not students["models"]:
        raise ValueError("config keys students.widths and students.models: no student; list a width or a model")
    clash = sorted(set(map(str, students["widths"])) & set(students["models"]))
    if clash:
        raise ValueError(f"config key students.models: label(s) {clash} are also widths; every student needs its own label")
    check_compare_students(cfg)
    augment = {**cfg["train"], **cfg["students"]["train"]}["augment"]
    if cfg["teacher"]["cache"] and cfg["students"]["lockstep"]:
        raise ValueError(
            "config keys students.lockstep and teacher.cache: a lock-step cohort runs the teacher once per "
            "batch for all its students; use one or the other")
    if cfg["teacher"]["cache"] and augment != "none":
        raise ValueError(
            f"config key teacher.cache: a teacher cache holds the features of the un-augmented slices, so it is "
            f"exact only for students trained with augment 'none' (students train with '{augment}'); "
            "set teacher.cache: [] to run the teacher online on each augmented batch")
    ranges = {k: phantom[k] for k in ("slices", "spacing_xy", "slice_thickness")}
    ranges |= {f"tumours.{k}": v for k, v in (phantom["tumours"] or {}).items()}
    for key, (lo, hi) in ranges.items():
        if lo > hi:
            raise ValueError(f"config key data.phantom.{key}: minimum {lo} exceeds maximum {hi}")


def check_compare_students(cfg: dict) -> None:
    """Raise ValueError naming ``report.compare_students`` for a pair that is not two students of the study
    with scratch runs (checked before any training, since the claim is made after it)."""
    students = cfg["students"]
    labels = [*map(str, students["widths"]), *students["models"]]
    for pair in cfg["report"]["compare_students"]:
        unknown = [label for label in map(str, pair) if label not in labels]
        if unknown:
            raise ValueError(f"config key report.compare_students: {unknown} not among the students "
                             f"(students.widths and students.models: {labels})")
        if str(pair[0]) == str(pair[1]):
            raise ValueError(f"config key report.compare_students: {list(pair)} compares a student with itself")
        if students["methods"] != "all" and "scratch" not in students["methods"]:
            raise ValueError("config key report.compare_students: a student's gain is over its scratch run; "
                             "add scratch to students.methods")


def check_against_package(cfg: dict) -> None:
    """Raise ValueError naming the key for method names and options unknown to the registry, a task
    the classes cannot express, and split settings that would leave a part empty; resolves
    ``students.methods: all`` first."""
    from hkd.data.tasks import check_task
    from hkd.errors import DataError

    data = cfg["data"]
    try:
        check_task(data["task"], data["classes"])
    except DataError as exc:
        raise ValueError(f"config key {exc}") from None
    resolve_methods(cfg)
    check_methods(cfg)
    check_split(cfg)


def resolve_methods(cfg: dict) -> None:
    """``students.methods: all`` -> every registered method (:func:`hkd.distill.available`), scratch first;
    in place, so every rule reads the list."""
    from hkd import distill

    if cfg["students"]["methods"] == "all":
        names = distill.available()
        cfg["students"]["methods"] = [m for m in names if m == "scratch"] + [m for m in names if m != "scratch"]


def check_methods(cfg: dict) -> None:
    """Method names and options against the registry (hkd/distill), the one source of truth."""
    from hkd import distill

    available = distill.available()
    for key, names in (("students.methods", cfg["students"]["methods"]), ("teacher.cache", cfg["teacher"]["cache"]),
                       ("distill", list(cfg["distill"]))):
        unknown = sorted(set(names) - set(available))
        if unknown:
            raise ValueError(f"config key {key}: unknown method(s) {unknown}; available: {available}")
    for name, options in cfg["distill"].items():
        method = distill.get(name)
        known = method.option_defaults()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"config key distill.{name}: unknown option(s) {unknown}; {name} takes {sorted(known)}")
        try:
            method.check_options(options)
        except distill.OptionError as exc:
            raise ValueError(f"config key distill.{name}.{exc.option}: {exc}") from None


def source_cases(data: dict, out: str) -> int | None:
    """Number of cases the source will hold, where known before any job runs (else None)."""
    from hkd.data.readers import count_cases

    source = source_of(data)
    if source.name == "phantom":
        return data["phantom"]["cases"]
    if not downloads(data):
        return count_cases(data["path"], source.name)
    if source.download.cases is not None:
        return source.download.cases(data)
    return count_cases(Layout(out).download(data["source"], archive=packed(data) == "zip"), source.name)


def check_split(cfg: dict) -> None:
    """Split settings that would leave a part empty, found before the expensive work."""
    from hkd.data.split import PARTS, check_split as check_parts, format_ratios, part_sizes
    from hkd.errors import DataError

    split = cfg["data"]["split"]
    if split["preset"] == "file":
        path = split["file"]
        if not os.path.isfile(path):
            raise ValueError(f"config key data.split.file: {path} does not exist")
        try:
            parts = json.loads(open(path).read())
            check_parts({part: list(parts[part]) for part in PARTS})
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"config key data.split.file: {path}: not a split file with non-empty "
                             f"'train', 'val' and 'test' lists ({exc})") from None
    if split["preset"] != "random":
        return
    zero = [part for part, r in zip(PARTS, split["ratios"]) if r == 0]
    if zero:
        raise ValueError(f"config key data.split.ratios: {format_ratios(split['ratios'])} leave the "
                         f"'{zero[0]}' part empty")
    try:
        n = source_cases(cfg["data"], cfg["out"])
    except DataError as exc:
        raise ValueError(f"config key data.path: {exc}") from None
    try:
        if n is not None:
            part_sizes(n, split["ratios"])
    except DataError as exc:
        raise ValueError(f"config key {exc}") from None

