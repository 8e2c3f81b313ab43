"""One writer per output folder: a lock file inside ``out`` names the run that holds it.

Snakemake locks its working directory, not the output folder, so two runs started from different
working directories with the same absolute ``out`` would train the same models at once and delete
each other's resume state. The workflow takes this lock when it starts executing (never for a dry
run) and removes it on exit; every training run (``hkd train``) takes the same lock on its output and work
folders. A lock whose process is gone (same host) is taken over with a message; a lock held from another
host, or a lock file that stays empty or unreadable (a run killed while creating it, a full disk), can only
be checked by the user, so every refusal names the lock file and says it can be deleted when no run holds it.
File locks (fcntl/filelock) are not used because they are unreliable on the network filesystems that
cluster outputs live on, and cannot name the holder; an O_EXCL-created file works on all of them.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".hkd.lock"


class LockError(RuntimeError):
    """The output folder is in use by another run."""


def _alive(pid: int) -> bool:
    """True when process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutLock:
    """The lock on output folder ``out``, held by this process between :meth:`acquire` and :meth:`release`."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self.me = {"pid": os.getpid(), "host": socket.gethostname()}
        self.held = False

    def _read(self, path: Path | None = None) -> dict | None:
        """The holder recorded in the lock file; None when it is missing, not (yet) complete or not a
        holder hkd writes (a positive process id and a host name)."""
        try:
            holder = json.loads((path or self.path).read_text())
        except (OSError, ValueError):
            return None
        if not (isinstance(holder, dict) and isinstance(holder.get("host"), str)):
            return None
        pid = holder.get("pid")
        return holder if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None

    def _create(self) -> bool:
        record = {**self.me, "cwd": os.getcwd(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record) + "\n")
        return True

    def _describe(self, holder: dict) -> str:
        details = [f"working directory {holder['cwd']}"] if holder.get("cwd") else []
        details += [f"since {holder['started']}"] if holder.get("started") else []
        return f"process {holder['pid']} on host {holder['host']}" + (f" ({', '.join(details)})" if details else "")

    def acquire(self, wait_incomplete: float = 2.0) -> None:
        """Take the lock, or raise :class:`LockError` naming the process and host that hold it."""
        if self.held:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_incomplete
        while not self._create():
            holder = self._read()
            if holder is None:  # just created by another run and not yet written, or left so by a crash
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise LockError(f"{self.out}: its lock file {self.path} is empty or unreadable (a run killed while "
                                f"taking the lock?); if no run is using {self.out}, delete {self.path}")
            if holder["pid"] == self.me["pid"] and holder["host"] == self.me["host"]:
                break  # ours already
            if holder["host"] != self.me["host"] or _alive(holder["pid"]):
                raise LockError(f"{self.out} is in use by {self._describe(holder)} (one run per folder); wait for "
                                f"that run to end, or if it is gone, delete {self.path}")
            # Stale: its process is gone. Move it aside atomically, so that of two runs taking it over at
            # once only one removes it, then compete for a fresh lock.
            aside = self.path.with_name(f"{LOCK_NAME}.stale.{self.me['pid']}")
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path, aside)
                moved = self._read(aside)
                if moved and moved.get("pid") != holder["pid"]:  # a fresh lock was created in between
                    os.replace(aside, self.path)
                    continue
                aside.unlink()
                log.warning("%s: taking over the lock of process %s on host %s, which is no longer running",
                            self.out, holder["pid"], holder["host"])
        self.held = True
        atexit.register(self.release)

    def release(self) -> None:
        """Remove the lock if this process holds it (safe to call more than once)."""
        if not self.held:
            return
        holder = self._read()
        if holder and holder["pid"] == self.me["pid"] and holder["host"] == self.me["host"]:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.held = False

    def __enter__(self) -> "OutLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
