"""Atomic file output: a result is either complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class InputOverwriteError(ValueError):
    """An output path whose writing would destroy an input or a folder hkd did not write."""


# Marks a folder written by atomic_dir: only such a folder (or an empty one) is ever replaced.
OUTPUT_MARKER = ".hkd-output"


def check_replaceable(path: str | os.PathLike) -> None:
    """Raise unless ``path`` is absent, an empty folder, or a folder an earlier :func:`atomic_dir` wrote."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink() and (
            (path / OUTPUT_MARKER).is_file() or not any(path.iterdir())):
        return
    raise InputOverwriteError(f"{path} exists and is not an earlier output of hkd (no {OUTPUT_MARKER}); "
                              "refusing to replace it: remove it yourself or choose another output path")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary directory next to ``path``; it replaces ``path`` only on success.

    An existing ``path`` is replaced only when it is empty or an earlier output (see
    :func:`check_replaceable`), checked before any work and again before the swap.
    """
    path = Path(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        (tmp / OUTPUT_MARKER).write_text("written by hkd; this folder is replaced when its command reruns\n")
        check_replaceable(path)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve(strict=False)


def check_outputs_spare_inputs(outputs: dict[str, str | os.PathLike | None],
                               inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse any output that is, contains or lies inside an input: writing it would destroy data.

    Both arguments map a name used in messages (e.g. ``--out``) to a path (``None`` entries are
    skipped). Symbolic links are resolved, so a link to an input counts as the input.
    """
    ins = {name: _resolved(p) for name, p in inputs.items() if p is not None}
    for out_name, out_path in outputs.items():
        if out_path is None:
            continue
        out = _resolved(out_path)
        for in_name, src in ins.items():
            if out == src:
                how = "is"
            elif out in src.parents:
                how = "contains"
            elif src in out.parents:
                how = "lies inside"
            else:
                continue
            raise InputOverwriteError(f"{out_name} {out_path} {how} the input {in_name} {inputs[in_name]}; "
                                      "choose an output path outside the inputs (nothing was written)")


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
