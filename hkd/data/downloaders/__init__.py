"""The downloaders: one module per downloadable source, named after it (``hkd download --source NAME``).

A source that downloads says so in the registry (:mod:`hkd.data.sources`, its ``download`` entry); its
module here offers ``add_arguments(group)`` (its options of ``hkd download``) and ``run(args)`` (fetch
into ``args.out`` within ``args.timeout`` seconds; returns what was downloaded, for the log). Every
download runs under :func:`time_limit` and writes to a staging place that replaces its target only
when complete, so a failed or interrupted download leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import threading

from hkd.data.sources import SOURCES
from hkd.errors import DataError

# Seconds before a whole download is abandoned (hkd download --timeout, config data.download_timeout).
# RawData.zip is about 1.5 GB: two hours allow ~0.2 MB/s; without a network the reachability probe
# fails within its probe's timeout instead.
DOWNLOAD_TIMEOUT = 7200.0


def downloader(source: str):
    """The module that downloads ``source`` (imported now)."""
    if source not in SOURCES or SOURCES[source].download is None:
        known = ", ".join(name for name, s in SOURCES.items() if s.download)
        raise DataError(f"--source {source}: not a downloadable source ({known})")
    return importlib.import_module(f"{__name__}.{source}")


class Deadline(BaseException):
    """The overall download time ran out (a BaseException, so that retry loops cannot swallow it)."""


def check_timeout(seconds: float | None) -> None:
    """A download's time limit must be a positive number of seconds (None: no limit)."""
    if seconds is not None and not (isinstance(seconds, (int, float)) and 0 < seconds < float("inf")):
        raise DataError(f"--timeout {seconds:g}: must be a positive number of seconds (config data.download_timeout)")


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str):
    """Raise DataError in the main thread once ``seconds`` have passed; SIGTERM raises KeyboardInterrupt.

    synapseclient has no overall deadline (it retries failed requests for a long time), hence this
    signal-based one. Off the main thread, or without SIGALRM, no limit is set.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise Deadline(f"{what}: no result after {seconds:g} s (hkd download --timeout, "
                           "config data.download_timeout)")

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"{what}: terminated")

    old_alarm = signal.signal(signal.SIGALRM, on_alarm)
    old_term = signal.signal(signal.SIGTERM, on_term)
    if seconds:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGTERM, old_term)
