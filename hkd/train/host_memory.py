"""Keep freed host memory in the process, so a CPU training step stops page-faulting.

A training step frees its activations and gradients and allocates them again in the next step. glibc's
malloc serves blocks above its mmap threshold (at most 32 MiB) with fresh ``mmap`` pages and gives them
back to the kernel on ``free``; it also trims the top of its heap. Each such page is zero-filled by the
kernel again on its first touch in the next step: tens of thousands of page faults per step of the paper
TransUNet on the CPU. :func:`retain_freed_memory` makes glibc serve every block from its heap and trim
it only when 2 GiB lie free at its top, so after the first steps the process reuses its own memory
(peak memory is unchanged; it is just not returned until the process ends). The numbers computed do not change: PyTorch aligns every
CPU buffer to 64 bytes whichever way the block was obtained.

Written here, not taken from a library: the usual fix is to preload jemalloc or tcmalloc, which needs a
system package and an ``LD_PRELOAD`` set before the process starts; glibc's ``mallopt`` needs neither.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_MAX = -4
_applied = False


def retain_freed_memory() -> bool:
    """Serve every allocation of this process from the heap and keep what is freed (glibc only).

    Process-wide and permanent. Returns whether it is in effect (False on other C libraries).
    """
    global _applied
    if _applied:
        return True
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if not ok:
        log.warning("glibc mallopt refused; freed host memory goes back to the kernel as usual")
        return False
    _applied = True
    return True
