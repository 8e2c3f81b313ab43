"""Device selection: which torch device a run uses, and which GPU a local job gets.

``resolve_device`` turns a config string (``auto``, ``cpu``, ``cuda``, ``cuda:N``,
``mps``) into a :class:`torch.device`, failing loudly when an explicitly requested
device is not there.

``claim_gpu`` hands each of several concurrent local jobs its own GPU. Snakemake's
local executor limits how many ``resources: gpu=1`` jobs run at once but never says
*which* GPU a job should use; without help every job would land on ``cuda:0``. Each
job therefore takes an exclusive lock file per GPU (``<lock_dir>/gpu-<id>.lock``, in a folder
the user owns, never through a symbolic link) on
the first free device and restricts itself to it through ``CUDA_VISIBLE_DEVICES``.
Locks are ``flock`` locks, so the kernel drops them when a process dies; a crashed
job never leaves a GPU reserved.

Under SLURM (``SLURM_JOB_ID`` set) the scheduler has already assigned the GPU and set
``CUDA_VISIBLE_DEVICES``; ``claim_gpu`` then does nothing.

.. important::
   ``CUDA_VISIBLE_DEVICES`` is read once, when CUDA is initialised in the process.
   Enter ``claim_gpu`` before anything touches CUDA (creating a CUDA tensor, moving a
   model to ``cuda``, ``torch.cuda.device_count()`` and similar). Importing torch is
   fine. ``claim_gpu`` raises ``RuntimeError`` if CUDA is already initialised.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily: claim_gpu must work before CUDA starts
    import torch

__all__ = ["DeviceUnavailableError", "GpuLockError", "default_lock_dir", "resolve_device", "claim_gpu", "visible_gpus",
           "autocast"]

log = logging.getLogger(__name__)

_SPEC = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


class DeviceUnavailableError(RuntimeError):
    """An explicitly requested device does not exist on this machine."""


def _mps_available(torch_mod) -> bool:
    mps = getattr(torch_mod.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(spec: str = "auto") -> "torch.device":
    """Return the torch device named by ``spec``.

    ``auto`` picks CUDA if available, then Apple MPS, then the CPU. ``cpu``, ``cuda``,
    ``cuda:N`` and ``mps`` are taken literally; if the named device is not available a
    :class:`DeviceUnavailableError` names it and says why. Any other string raises
    ``ValueError``.
    """
    import torch

    text = str(spec).strip().lower()
    m = _SPEC.match(text)
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise ValueError(f"unknown device {spec!r}: expected one of auto, cpu, cuda, cuda:N, mps")
    kind, index = m.group(1), m.group(2)

    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available(torch):
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available(torch):
            raise DeviceUnavailableError(
                f"device 'mps' was requested but Apple MPS is not available in this torch build "
                f"({torch.__version__}) or on this machine; use device 'auto' or 'cpu'"
            )
        return torch.device("mps")

    # cuda / cuda:N
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise DeviceUnavailableError(
            f"device {text!r} was requested but CUDA is not available (torch {torch.__version__}, "
            f"{build}{hint}); use device 'auto' or 'cpu'"
        )
    if index is not None:
        count = torch.cuda.device_count()
        if int(index) >= count:
            raise DeviceUnavailableError(
                f"device {text!r} was requested but only {count} CUDA device(s) are visible "
                f"(cuda:0..cuda:{count - 1}); CUDA_VISIBLE_DEVICES="
                f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}"
            )
        return torch.device("cuda", int(index))
    return torch.device("cuda")


# --------------------------------------------------------------------------- GPU picking


def _nvidia_smi_indices() -> list[str]:
    """GPU indices reported by nvidia-smi (run in a child process: CUDA stays untouched)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def visible_gpus() -> list[str]:
    """The GPU ids this process may use, without initialising CUDA.

    ``CUDA_VISIBLE_DEVICES`` when set (an empty value means no GPU), otherwise the
    indices listed by ``nvidia-smi`` (none when it is missing).
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    return _nvidia_smi_indices()


def _cuda_initialised() -> bool:
    torch_mod = sys.modules.get("torch")
    if torch_mod is None:
        return False
    try:
        return bool(torch_mod.cuda.is_initialized())
    except Exception:  # pragma: no cover - exotic builds
        return False


def _lock_name(device: str) -> str:
    return "gpu-" + re.sub(r"[^A-Za-z0-9._-]", "_", device) + ".lock"


class GpuLockError(OSError):
    """A GPU lock folder or file that hkd will not use (another user's, or a symbolic link)."""


def default_lock_dir() -> Path:
    """The per-user folder of GPU lock files: ``$XDG_RUNTIME_DIR/hkd-gpu-locks``, else
    ``<tmp>/hkd-gpu-locks-<uid>`` (a shared, predictable name would let another user plant links)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.stat(runtime).st_uid == os.geteuid():
        return Path(runtime) / "hkd-gpu-locks"
    return Path(tempfile.gettempdir()) / f"hkd-gpu-locks-{os.geteuid()}"


def _lock_folder(lock_dir: Path) -> Path:
    """Create ``lock_dir`` (private to this user) or check that this user owns it and it is no link."""
    try:
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        pass
    info = os.lstat(lock_dir)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise GpuLockError(f"GPU lock folder {lock_dir} is a symbolic link or not a folder; "
                           "use a folder you own (--gpu-locks)")
    if info.st_uid != os.geteuid():
        raise GpuLockError(f"GPU lock folder {lock_dir} belongs to another user (uid {info.st_uid}); "
                           "use a folder you own (--gpu-locks)")
    return lock_dir


def _open_lock(path: Path) -> int:
    """Open lock file ``path`` without following a symbolic link, creating it if need be; a regular file only."""
    flags = os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            fd = os.open(path, os.O_RDWR | flags, 0o600)
        except PermissionError:  # a lock file created by another user: flock works read-only too
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise GpuLockError(f"GPU lock file {path} is a symbolic link; hkd never writes through one "
                               "(remove it)") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise GpuLockError(f"GPU lock file {path} is not a regular file; remove it")
    return fd


def _try_lock(path: Path) -> int | None:
    """Open ``path`` and take an exclusive non-blocking flock; the fd, or None if busy."""
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    with contextlib.suppress(OSError):  # who holds it, for people looking at the lock dir
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _slot_lock_name(device: str, slot: int) -> str:
    """Lock file of one of a GPU's job slots (slot 0 keeps the one-job-per-GPU name)."""
    name = _lock_name(device)
    return name if slot == 0 else name[: -len(".lock")] + f".{slot}.lock"


def _lock_first_free(devices: list[str], lock_dir: Path, slots: int = 1) -> tuple[str, int] | None:
    """Lock the first free job slot, filling every GPU's first slot before any second one."""
    for slot in range(slots):
        for device in devices:
            fd = _try_lock(lock_dir / _slot_lock_name(device, slot))
            if fd is not None:
                return device, fd
    return None


@contextlib.contextmanager
def claim_gpu(
    lock_dir: Path | str | None,
    visible: list[str] | None = None,
    *,
    timeout: float = 3600.0,
    poll_interval: float = 1.0,
    slots: int = 1,
) -> Iterator[str | None]:
    """Reserve one GPU for this process while the ``with`` block runs.

    ``slots`` is the number of jobs a GPU takes at once (``jobs_per_gpu`` in the config): each GPU has
    that many locks, and a job takes the first free one, every GPU's first before any GPU's second.

    ``lock_dir`` is a folder this user owns (None: :func:`default_lock_dir`); lock files are opened
    without following symbolic links, and one that is a link is an error, never written through.

    ``visible`` is the list of candidate GPU ids; by default :func:`visible_gpus`
    (``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi``). With two or more candidates the
    first one whose lock ``<lock_dir>/gpu-<id>.lock`` is free is locked, exported as
    ``CUDA_VISIBLE_DEVICES=<id>`` (so the process sees it as ``cuda:0``) and yielded.
    When every candidate is locked, it retries every ``poll_interval`` seconds and
    raises ``TimeoutError`` after ``timeout`` seconds. On exit the lock is released
    and ``CUDA_VISIBLE_DEVICES`` is restored.

    Nothing is done, and ``None`` is yielded, under SLURM (``SLURM_JOB_ID`` set: the
    scheduler already assigned the GPU) or with fewer than two candidates.

    Must be entered before CUDA is initialised in this process (see the module
    docstring); otherwise ``RuntimeError``.
    """
    if os.environ.get("SLURM_JOB_ID"):
        log.debug("SLURM job %s: GPU assigned by SLURM, not picking one", os.environ["SLURM_JOB_ID"])
        yield None
        return
    devices = list(visible) if visible is not None else visible_gpus()
    if len(devices) < 2:
        yield None
        return
    if _cuda_initialised():
        raise RuntimeError(
            "claim_gpu() must be entered before CUDA is initialised: CUDA_VISIBLE_DEVICES "
            "is read only once per process"
        )

    lock_dir = _lock_folder(Path(lock_dir) if lock_dir is not None else default_lock_dir())
    deadline = time.monotonic() + timeout
    announced = False
    if slots < 1:
        raise ValueError(f"jobs per GPU must be at least 1, got {slots}")
    while (claimed := _lock_first_free(devices, lock_dir, slots)) is None:
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"no free GPU among {','.join(devices)} ({slots} job(s) each) after {timeout:g} s "
                f"(locks in {lock_dir})"
            )
        if not announced:
            log.info("all GPUs (%s) are busy; waiting for one to become free", ",".join(devices))
            announced = True
        time.sleep(max(0.0, min(poll_interval, deadline - time.monotonic())))
    device, fd = claimed

    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    log.info("claimed GPU %s", device)
    try:
        yield device
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def autocast(device: "torch.device", precision: str):
    """bf16 autocast where ``precision`` asks for it: 'bf16' anywhere, 'auto' on CUDA only.

    On the CPU, bf16 pays off where the CPU has bf16 matrix units: 1.8x for a paper-size TransUNet
    step on a Xeon with AMX (benchmarks/train_step.py --cpu-bf16).
    """
    import torch

    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)
