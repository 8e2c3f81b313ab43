"""The record of what hkd wrote: one hidden file per folder, listing the files hkd wrote there.

A file is hkd's only when the record of its folder lists it, written by the same command, and it is
unchanged since: the same size, and the same modification time or else the same SHA-256 (a file saved
again with the same content is still hkd's; a file the user edited is the user's). A folder is hkd's to
replace or delete when hkd created it and everything in it is hkd's by that rule. Nothing else counts: not
a name, a suffix, a content or a marker (:mod:`hkd.guard` applies the rule).

``<folder>/.hkd-record.json``::

    {"hkd_record": 1, "created": true,
     "files": {"model.pt": {"size": 1234, "mtime_ns": 1700000000000000000, "sha256": "...", "by": "hkd train"}},
     "writing": {".model.pt.k2j4h1x0.pt": {"pid": 4242, "host": "node1", "kind": "file", "by": "hkd train"}}}

``created``: hkd made the folder (a folder that existed before stays the user's: hkd only records the files
it writes in it). ``by``: the command that wrote the file (``hkd <command>``; ``null`` for a call of hkd's
functions from Python, which matches any command). ``writing``: the temporaries of writes in progress; the
next write in the folder removes those whose process is gone (same host), so a killed write leaves nothing.

Every update reads, changes and replaces the record (written to a temporary and renamed) under an
exclusive lock on the folder (``flock`` on the folder itself; where the filesystem has none, unlocked),
so concurrent jobs writing into one folder keep each other's entries.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path

log = logging.getLogger(__name__)

RECORD = ".hkd-record.json"
_RECORD_TMP = RECORD + ".tmp"  # the record while it is replaced (one writer at a time: the folder's lock)
BOOKKEEPING = (RECORD, _RECORD_TMP)  # the record's own files, never a user's entry
VERSION = 1

_writer = {"by": None}  # the command of this process (set by hkd's command line)


def set_writer(command: str | None) -> None:
    """Name the command whose writes this process records (``hkd <command>``)."""
    _writer["by"] = command


def writer() -> str | None:
    return _writer["by"]


def _empty(created: bool) -> dict:
    return {"hkd_record": VERSION, "created": created, "files": {}, "writing": {}}


def read(folder: str | os.PathLike) -> dict | None:
    """The record of ``folder``, or None when it has none (or one hkd cannot read: then nothing is hkd's)."""
    path = Path(folder) / RECORD
    try:
        if path.is_symlink():
            return None
        rec = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not (isinstance(rec, dict) and rec.get("hkd_record") == VERSION and isinstance(rec.get("files"), dict)
            and isinstance(rec.get("writing", {}), dict)):
        return None
    rec.setdefault("writing", {})
    return rec


def _write(folder: Path, rec: dict) -> None:
    tmp = folder / _RECORD_TMP
    with open(tmp, "w") as f:
        f.write(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, folder / RECORD)


@contextlib.contextmanager
def _locked(folder: Path):
    """Hold the folder's exclusive lock (flock on the folder itself)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # no flock on this filesystem: updates are then unlocked
            if exc.errno not in (errno.ENOLCK, errno.EBADF, errno.EINVAL, errno.EOPNOTSUPP):
                raise
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def updating(folder: str | os.PathLike, created: bool = False):
    """Yield the record of ``folder`` (a new one, ``created`` as given, when it has none) under its lock;
    written back when the block ends. A record left with nothing to say (no file of hkd's, no write in
    progress, and a user's folder or an empty one) is removed, so a failed command leaves nothing behind."""
    folder = Path(folder)
    with _locked(folder):
        rec = read(folder) or _empty(created)
        yield rec
        if rec["files"] or rec["writing"] or (rec["created"] and _holds_more(folder)):
            _write(folder, rec)
        else:
            (folder / RECORD).unlink(missing_ok=True)


def _holds_more(folder: Path) -> bool:
    """Whether ``folder`` holds anything besides its record."""
    return any(p.name not in BOOKKEEPING for p in folder.iterdir())


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(path: str | os.PathLike) -> dict:
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256(path), "by": writer()}


def _same_writer(entry: dict) -> bool:
    by, me = entry.get("by"), writer()
    return by is None or me is None or by == me


def entry_of(path: str | os.PathLike) -> dict | None:
    """The record's entry of the file ``path``, or None."""
    path = Path(path)
    rec = read(path.parent)
    entry = (rec or {}).get("files", {}).get(path.name)
    return entry if isinstance(entry, dict) else None


def unchanged(path: str | os.PathLike, entry: dict) -> bool:
    """Whether the file ``path`` is as hkd wrote it: as its ``entry`` says, or, while a replacement is being
    renamed into place (a process killed then leaves either), as the entry's ``previous`` says."""
    previous = entry.get("previous")
    return _matches(path, entry) or (isinstance(previous, dict) and _matches(path, previous))


def _matches(path: str | os.PathLike, entry: dict) -> bool:
    try:
        stat = os.lstat(path)
    except OSError:
        return False
    if not os.path.isfile(path) or os.path.islink(path) or stat.st_size != entry.get("size"):
        return False
    if stat.st_mtime_ns == entry.get("mtime_ns"):
        return True
    try:
        return sha256(path) == entry.get("sha256")
    except OSError:
        return False


def why_not_hkds(path: str | os.PathLike) -> str | None:
    """None when the file ``path`` is hkd's to replace or delete (recorded, by this command, unchanged); else
    why not, in words."""
    entry = entry_of(path)
    if entry is None:
        return f"hkd did not write it (the record {Path(path).parent / RECORD} does not list it)"
    if not _same_writer(entry):
        return f"{entry['by']} wrote it, and {writer()} replaces only files it wrote itself"
    if not unchanged(path, entry):
        return "it was changed since hkd wrote it"
    return None


def created(folder: str | os.PathLike) -> bool:
    """Whether hkd created ``folder`` (its record says so)."""
    return bool((read(folder) or {}).get("created"))


def foreign(folder: str | os.PathLike) -> tuple[Path, str] | None:
    """The first entry of ``folder`` (at any depth) that is not hkd's, with why; None when all are."""
    folder = Path(folder)
    for entry in sorted(folder.iterdir()):
        if entry.name in BOOKKEEPING:
            continue
        if entry.is_symlink():
            return entry, "a symbolic link hkd did not make"
        if entry.is_dir():
            if not created(entry):
                return entry, "a folder hkd did not create"
            inner = foreign(entry)
            if inner:
                return inner
            continue
        why = why_not_hkds(entry)
        if why:
            return entry, why
    return None


def make_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` and its missing parents, recording each folder created here as hkd's."""
    folder = Path(folder)
    missing = []
    probe = folder
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:  # made by a concurrent run: not ours
            continue
        _write(path, _empty(True))
    return folder


def add(path: str | os.PathLike) -> None:
    """Record the file ``path``, as it is now, as written by this command."""
    path = Path(path)
    with updating(path.parent) as rec:
        rec["files"][path.name] = fingerprint(path)


def replace(temporary: Path, path: Path, check) -> None:
    """Rename the finished ``temporary`` onto ``path`` and record it, under the folder's lock, after
    ``check(path)`` (which raises if ``path`` may not be replaced). The record names the new content before
    the rename, with the old as ``previous`` until after it, so a kill at any point leaves a file hkd knows."""
    folder = path.parent
    with _locked(folder):
        rec = read(folder) or _empty(False)
        check(path)
        new = fingerprint(temporary)
        old = rec["files"].get(path.name)
        if isinstance(old, dict) and path.exists():
            old.pop("previous", None)
            rec["files"][path.name] = {**new, "previous": old}
        else:  # a new file: listed before it appears (an entry without a file is harmless)
            rec["files"][path.name] = new
        _write(folder, rec)
        os.replace(temporary, path)
        rec["files"][path.name] = new
        rec["writing"].pop(temporary.name, None)
        _write(folder, rec)


def _drop(path: str | os.PathLike, section: str) -> None:
    path = Path(path)
    if read(path.parent) is None:
        return
    with updating(path.parent) as rec:
        rec[section].pop(path.name, None)


def forget(path: str | os.PathLike) -> None:
    """Drop the file ``path`` from its folder's record (after deleting it)."""
    _drop(path, "files")


def begin(temporary: str | os.PathLike, kind: str = "file") -> None:
    """Record the ``temporary`` (file or folder) a write is about to create, after removing those that killed
    writes left in the folder."""
    temporary = Path(temporary)
    with updating(temporary.parent) as rec:
        _sweep(temporary.parent, rec)
        rec["writing"][temporary.name] = {"pid": os.getpid(), "host": socket.gethostname(), "kind": kind,
                                          "by": writer()}


def end(temporary: str | os.PathLike) -> None:
    """Drop the ``temporary`` of a write that ended (it was renamed into place or removed)."""
    _drop(temporary, "writing")


def _gone(writer_: dict) -> bool:
    """Whether the process of a write in progress is no longer running on this host."""
    try:
        pid, host = int(writer_["pid"]), writer_["host"]
    except (KeyError, TypeError, ValueError):
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


def _sweep(folder: Path, rec: dict) -> None:
    """Remove the temporaries that killed writes recorded in ``rec`` (the record of ``folder``, held under its
    lock) left there, and their entries."""
    for name, w in list(rec["writing"].items()):
        if not _gone(w):
            continue
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
        if path.exists():
            continue
        log.info("removed %s, left by a write that was killed", path)
        del rec["writing"][name]


def record_tree(folder: str | os.PathLike, created: bool = True) -> None:
    """Record every file under ``folder`` (a new output written in a temporary folder) as this command's:
    one record per folder, the top one ``created`` as given, the folders below it created by hkd."""
    folder = Path(folder)
    for here, dirs, files in os.walk(folder):
        here = Path(here)
        rec = _empty(created if here == folder else True)
        for name in files:
            if name not in BOOKKEEPING and not (here / name).is_symlink():
                rec["files"][name] = fingerprint(here / name)
        _write(here, rec)
