"""Atomic file output: a result is either complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import re
import socket
import shutil
import tempfile
from pathlib import Path

from hkd.guard import InputOverwriteError, check_replaceable, mark_own

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)


class NoSpaceError(OSError):
    """A write that failed for want of space (disk full, quota or file-size limit); names the file."""


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# How torch.save reports a short write (its zip writer checks every write's position).
_TORCH_SHORT_WRITE = ("unexpected pos", "file write failed")


def _out_of_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _NO_SPACE
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_SHORT_WRITE)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", own: bool = True):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    An existing ``path`` is replaced only when hkd wrote it (:func:`hkd.guard.check_replaceable`; ``own``
    False: a file of another tool's store that hkd edits, such as MLflow's, is replaced as it is). A
    write that fails for want of space raises :class:`NoSpaceError` naming ``path``, which keeps its
    earlier content.
    """
    path = Path(path)
    if own:
        check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if _out_of_space(exc):
            kept = "its earlier content is kept" if path.exists() else "nothing was written"
            raise NoSpaceError(f"no space left while writing {path} ({kept})") from None
        raise


# mkstemp's random part of a temporary's name (8 characters of this alphabet; Python's tempfile).
_RANDOM_PART = "[a-z0-9_]{8}"


def remove_killed_writes(folder: str | os.PathLike, names) -> list[Path]:
    """Remove what killed :func:`atomic_path` writes of the files ``names`` left in ``folder``: plain files
    named as its temporaries are (``.<name>.<8 random characters><suffix>``), nothing else. Call it only
    while no other run writes there (holding the folder's lock); returns the removed paths."""
    folder = Path(folder)
    patterns = {n: re.compile(rf"\.{re.escape(n)}\.{_RANDOM_PART}{re.escape(Path(n).suffix)}") for n in names}
    removed = []
    for entry in (folder.iterdir() if folder.is_dir() else ()):
        name = next((n for n, p in patterns.items() if p.fullmatch(entry.name)), None)
        if name is not None and entry.is_file() and not entry.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
                log.info("removed %s, left by a write of %s that was killed", entry, folder / name)
    return removed


# Inside a temporary folder of atomic_dir while it is written: the writer's process and host, so that a
# later run can tell a temporary left by a killed writer from one still being written.
PARTIAL_MARKER = ".hkd-partial"


def _writer_gone(tmp: Path) -> bool:
    """Whether the temporary folder ``tmp`` was left by a writer no longer running on this host."""
    try:
        writer = json.loads((tmp / PARTIAL_MARKER).read_text())
        pid, host = int(writer["pid"]), writer["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary folders of earlier :func:`atomic_dir` writes of ``path`` whose writer was
    killed (only folders hkd marked as its partial output)."""
    if not path.parent.is_dir():
        return
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*"):
        if tmp.is_dir() and not tmp.is_symlink() and _writer_gone(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("removed %s, the temporary folder of a write of %s that was killed", tmp, path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary directory next to ``path``; it replaces ``path`` only on success.

    An existing ``path`` is replaced only when it is an empty folder or an earlier output (see
    :func:`hkd.guard.check_replaceable`), checked before any work and again before the swap. Temporary
    folders of earlier writes of ``path`` whose process was killed are removed first.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputOverwriteError(f"{path} exists and is a file, not a folder hkd wrote; refusing to replace it")
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    (tmp / PARTIAL_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
    try:
        yield tmp
        (tmp / PARTIAL_MARKER).unlink()
        mark_own(tmp)
        check_replaceable(path)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str, own: bool = True) -> None:
    """Write text atomically (``own``: as :func:`atomic_path`)."""
    with atomic_path(path, own=own) as tmp:
        tmp.write_text(text)
