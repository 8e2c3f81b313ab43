"""The one guard for every path an hkd command writes or deletes: it never destroys what hkd did not write.

Two rules, checked before any work:

* An output may not be, contain or lie inside an input of the same command
  (:func:`check_outputs_spare_inputs`; symbolic links are resolved).
* A file is replaced or deleted only when the record of its folder lists it as written by the same command
  and it is unchanged since (:mod:`hkd.record`); a folder only when everything in it is hkd's by that rule,
  and it is deleted whole only when hkd created it. A file or folder the record does not list is never
  replaced or deleted, whatever its name, suffix, content or marker; a folder that existed before a
  command stays the user's (hkd records the files it writes in it, nothing more).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hkd import record


class InputOverwriteError(ValueError):
    """An output path whose writing would destroy an input or something hkd did not write."""


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve(strict=False)


def _relation(a: Path, b: Path) -> str | None:
    """How resolved path ``a`` relates to ``b``: 'is', 'contains', 'lies inside' or None."""
    if a == b:
        return "is"
    if a in b.parents:
        return "contains"
    if b in a.parents:
        return "lies inside"
    return None


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
            how = _relation(out, src)
            if how:
                raise InputOverwriteError(f"{out_name} {out_path} {how} the input {in_name} {inputs[in_name]}; "
                                          "choose an output path outside the inputs (nothing was written)")


def check_apart(name: str, path: str | os.PathLike, other_name: str, other: str | os.PathLike) -> None:
    """Refuse ``path`` (a folder hkd deletes when done) when it is or contains ``other`` (one it keeps)."""
    how = _relation(_resolved(path), _resolved(other))
    if how in ("is", "contains"):
        raise InputOverwriteError(f"{name} {path} {how} {other_name} {other}; {name} is deleted when the run "
                                  f"ends, so it must lie apart from {other_name} (nothing was written)")


def _refusal(path: Path, why: str) -> InputOverwriteError:
    return InputOverwriteError(f"{path} exists and {why}; refusing to replace it: move it away or choose another "
                               "output path (nothing was written)")


def check_replaceable(path: str | os.PathLike) -> None:
    """Raise unless ``path`` is absent, a file hkd may replace (:func:`hkd.record.why_not_hkds`), or a folder
    whose every entry is hkd's at any depth (an empty folder too)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink():
        raise _refusal(path, "is a symbolic link")
    if path.is_dir():
        found = record.foreign(path)
        if found:
            entry, why = found
            raise _refusal(path, f"holds {entry.relative_to(path)}, which hkd may not replace ({why})")
        return
    why = record.why_not_hkds(path)
    if why:
        raise _refusal(path, why)


def claim_folder(folder: str | os.PathLike, flag: str, create: bool = True, names=()) -> Path:
    """Check ``folder`` for a command that writes the files ``names`` into it: a folder (or absent), and each
    of those files that exists is hkd's (its other files are never touched). With ``create`` the folder is
    made, recorded as hkd's when it is new (a folder that cannot be written is an error naming ``flag``)."""
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        kind = "a symbolic link" if folder.is_symlink() else "a file"
        raise InputOverwriteError(f"{flag} {folder} is {kind}, not a folder; choose a new or empty folder "
                                  "(nothing was written)")
    for name in names:
        path = folder / name
        if path.exists() or path.is_symlink():
            why = "it is a symbolic link" if path.is_symlink() else record.why_not_hkds(path)
            if why:
                raise InputOverwriteError(f"{flag} {folder} holds {name}, which hkd may not replace: {why}; move it "
                                          "away, or choose a new or empty folder (nothing was written)")
    if create:
        try:
            record.make_folder(folder)
        except OSError as exc:
            raise OSError(f"{flag} {folder}: cannot write there ({exc.strerror or exc}); choose a folder you can "
                          "write to (nothing was written)") from None
    return folder


def remove_own(path: str | os.PathLike) -> None:
    """Delete the file or folder ``path`` if it is hkd's (:func:`check_replaceable`): a folder hkd created goes
    whole; of a folder that existed before, only hkd's files go (the folder stays the user's)."""
    path = Path(path)
    check_replaceable(path)
    if not path.exists():
        return
    if path.is_file():
        path.unlink()
        record.forget(path)
    elif record.created(path):
        shutil.rmtree(path)
    else:
        for entry in sorted(path.iterdir()):
            if entry.name not in record.BOOKKEEPING:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        (path / record.RECORD).unlink(missing_ok=True)
