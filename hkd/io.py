"""Atomic file output: a result is either complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from pathlib import Path

from hkd import record
from hkd.guard import InputOverwriteError, check_replaceable

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


_READ_ONLY = {errno.EACCES, errno.EPERM, errno.EROFS}


@contextlib.contextmanager
def _named_if_read_only(path: Path):
    """Turn a refusal to write next to ``path`` into one line naming ``path`` and the read-only folder (not
    the temporary's path)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _READ_ONLY:
            raise
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        raise OSError(f"{path}: cannot write there ({folder} is read-only for this user); choose a folder you can "
                      "write to (nothing was written)") from None


def _temporary(path: Path, suffix: str, own: bool, create, kind: str = "file") -> Path:
    """A new temporary next to ``path`` (``.<name>.<8 random characters><suffix>``), made by ``create``; with
    ``own`` recorded in the folder's record before it exists, so a kill at any point leaves nothing the next
    write in the folder cannot remove. (tempfile.mkstemp names and creates in one step, leaving no moment to
    record the name first.)"""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        if own:
            record.begin(tmp, kind=kind)
        try:
            create(tmp)
            return tmp
        except BaseException as exc:
            if own:
                record.end(tmp)
            if not isinstance(exc, FileExistsError):
                raise
    raise FileExistsError(f"{path.parent}: no free name for a temporary of {path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", own: bool = True):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    An existing ``path`` is replaced only when it is hkd's (:func:`hkd.guard.check_replaceable`), checked
    before any work and again, under the folder's record lock, at the rename; the file written is recorded
    as this command's (:mod:`hkd.record`), and so is the temporary while it is written, so that a later
    write in the folder removes it if this process is killed. ``own`` False: a file of another tool's store
    that hkd edits, such as MLflow's, is replaced as it is, unrecorded. A write that fails for want of space
    raises :class:`NoSpaceError` naming ``path``, which keeps its earlier content.
    """
    path = Path(path)
    with _named_if_read_only(path):
        if own:
            check_replaceable(path)
            record.make_folder(path.parent)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary(path, suffix or path.suffix, own, lambda t: os.close(
            os.open(t, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 & ~_UMASK)))
    try:
        yield tmp
        if own:  # checked again: a file the user edited while this was written is theirs now
            record.replace(tmp, path, check_replaceable)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if own:
            with contextlib.suppress(OSError):
                record.end(tmp)
        if _out_of_space(exc):
            kept = "its earlier content is kept" if path.exists() else "nothing was written"
            raise NoSpaceError(f"no space left while writing {path} ({kept})") from None
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary directory next to ``path``; it replaces ``path`` only on success.

    An existing ``path`` is replaced only when everything in it is hkd's (see
    :func:`hkd.guard.check_replaceable`), checked before any work and again before the swap. Every file of
    the new folder is recorded as this command's; the folder keeps the owner it had (a folder that
    existed before hkd first wrote it stays the user's). Temporaries of earlier writes in the same folder
    whose process was killed are removed first (:func:`hkd.record.begin`).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputOverwriteError(f"{path} exists and is a file, not a folder hkd wrote; refusing to replace it")
    check_replaceable(path)
    with _named_if_read_only(path):
        record.make_folder(path.parent)
        created = record.created(path) if path.exists() else True
        tmp = _temporary(path, "", True, lambda t: os.mkdir(t, 0o777 & ~_UMASK), kind="folder")
    try:
        yield tmp
        record.record_tree(tmp, created=created)
        with record.updating(path.parent) as rec:
            check_replaceable(path)
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
            rec["writing"].pop(tmp.name, None)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            record.end(tmp)
        raise


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str, own: bool = True) -> None:
    """Write text atomically (``own``: as :func:`atomic_path`)."""
    with atomic_path(path, own=own) as tmp:
        tmp.write_text(text)
