"""Argument values every command reads the same way: JSON given inline or as a file."""

from __future__ import annotations

import json
from pathlib import Path

from hkd.errors import DataError


def is_inline_json(value: str) -> bool:
    return value.strip()[:1] in '{["'


def json_arg(value: str, flag: str):
    """A JSON value given inline, or the path of a JSON/YAML file holding it; errors name ``flag``."""
    if is_inline_json(value):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"{flag}: not valid JSON ({exc})") from None
    path = Path(value)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"{flag}: cannot read {path} ({exc.strerror or exc})") from None
    if path.suffix in (".yaml", ".yml"):
        from hkd.configfile import ConfigFileError, load_config_file

        try:
            return load_config_file(path)
        except ConfigFileError as exc:
            raise DataError(f"{flag}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{flag}: {path} is not valid JSON ({exc})") from None


def json_object(value: str, flag: str, required: tuple[str, ...] = ()) -> dict:
    """A JSON object argument that must hold the ``required`` keys."""
    obj = json_arg(value, flag)
    if not isinstance(obj, dict):
        raise DataError(f"{flag}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise DataError(f"{flag}: missing key(s) {missing}")
    return obj
