"""The folders a training run writes (``--out``, and ``--work`` when given): hkd's own, one run at a time.

A run replaces only its own files, and only those hkd wrote (:func:`hkd.guard.claim_folder`, by the
folder's record, :mod:`hkd.record`); other files in its folders are never touched. It takes the folders'
locks (:class:`hkd.lock.OutLock`, as the workflow does for the study's ``out``); its first write in each
removes the temporaries killed writes recorded there (:func:`hkd.record.begin`). At the end the work folder's
files and lock are removed, the folder itself when hkd created it and nothing else is in it. While
a run holds its folders, SIGTERM (a cluster's time limit, a workflow manager stopping the job) interrupts it
as Ctrl-C does, so the locks are released; only a SIGKILL leaves one, which the next run on the same host
takes over.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

from hkd import record
from hkd.guard import check_apart, claim_folder, remove_own
from hkd.lock import OutLock
from hkd.run_files import RUN_FILES  # what a run leaves in --out

WORK_FILES = ("state.pt", "best.pt")  # what a run keeps in its work folder (--work), deleted at the end


_held = {"runs": 0, "previous": None}  # SIGTERM's handler while any run of this process holds its folders


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _hold_sigterm(start: bool) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if start:
        _held["runs"] += 1
        if _held["runs"] == 1:
            _held["previous"] = signal.signal(signal.SIGTERM, _interrupt)
    elif _held["runs"] > 0:
        _held["runs"] -= 1
        if _held["runs"] == 0:
            signal.signal(signal.SIGTERM, _held["previous"] or signal.SIG_DFL)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


class RunFolders:
    """``out`` and the optional separate ``work`` folder of one run, each with its flag for messages."""

    def __init__(self, out: str | os.PathLike, work: str | os.PathLike | None = None):
        self.out = Path(out)
        self.work = Path(work) if work else None
        self.folders = {"--out": self.out, **({"--work": self.work} if self.work else {})}
        self.files = {"--out": RUN_FILES + (WORK_FILES if not self.work else ()), "--work": WORK_FILES}
        self.locks: list[OutLock] = []
        self._sigterm = False  # whether this run counts in _held

    def check(self) -> None:
        """Refuse, before any work, folders the run may not write: a work folder that is or holds ``--out``,
        a folder hkd did not create that holds files, a folder that cannot be written."""
        if self.work:  # deleted when the run ends: never the output folder
            check_apart("--work", self.work, "--out", self.out)
        for flag, folder in self.folders.items():
            claim_folder(folder, flag, create=False, names=self.files[flag])
            writable = folder if folder.is_dir() else _nearest_existing(folder)
            if not os.access(writable, os.W_OK | os.X_OK):
                raise OSError(f"{flag} {folder}: cannot write there ({writable} is read-only for this user); choose "
                              "a folder you can write to (nothing was written)")

    def claim(self) -> None:
        """Make the folders (recorded as hkd's when new) and take their locks."""
        for flag, folder in self.folders.items():
            claim_folder(folder, flag, names=self.files[flag])
        if not self._sigterm:
            _hold_sigterm(True)
            self._sigterm = True
        for flag, folder in self.folders.items():
            lock = OutLock(folder)
            lock.acquire()
            self.locks.append(lock)

    def release(self) -> None:
        """Release the locks (safe to call more than once)."""
        if self._sigterm:
            _hold_sigterm(False)
            self._sigterm = False
        for lock in self.locks:
            lock.release()
        self.locks = []

    def remove_work(self) -> None:
        """Delete the work folder's files (those hkd wrote), release the locks, then delete the folder if hkd
        created it and that left it empty (anything else put there is kept)."""
        if self.work and self.work.is_dir():
            for name in WORK_FILES:
                with contextlib.suppress(OSError, ValueError):  # not hkd's: kept
                    remove_own(self.work / name)
        self.release()
        if self.work and record.created(self.work):
            with contextlib.suppress(OSError, ValueError):  # holds what is not hkd's: kept
                remove_own(self.work)
