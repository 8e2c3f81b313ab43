"""Device resolution and the lock-file GPU picker (no GPU needed: devices are simulated)."""

from __future__ import annotations

import multiprocessing as mp
import contextlib
import os
import queue
from pathlib import Path

import pytest
import torch

from hkd import devices
from hkd.devices import DeviceUnavailableError, claim_gpu, resolve_device, visible_gpus

FORK = mp.get_context("fork")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    # The suite may itself run inside a SLURM job or on a GPU machine.
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _no_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def _fake_cuda(monkeypatch, count: int):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


# ----------------------------------------------------------------------------- resolve_device


def test_cpu_always_resolves():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_auto_falls_back_to_cpu(monkeypatch):
    _no_accelerators(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


def test_auto_prefers_cuda_then_mps(monkeypatch):
    _no_accelerators(monkeypatch)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    _fake_cuda(monkeypatch, 1)
    assert resolve_device("auto").type == "cuda"


def test_explicit_cuda_without_cuda_names_the_device(monkeypatch):
    _no_accelerators(monkeypatch)
    with pytest.raises(DeviceUnavailableError, match=r"'cuda'.*CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(DeviceUnavailableError, match=r"'cuda:1'"):
        resolve_device("cuda:1")


def test_cuda_index_out_of_range(monkeypatch):
    _fake_cuda(monkeypatch, 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cuda").type == "cuda"
    with pytest.raises(DeviceUnavailableError, match=r"'cuda:1'.*only 1 CUDA device"):
        resolve_device("cuda:1")


def test_explicit_mps_unavailable(monkeypatch):
    _no_accelerators(monkeypatch)
    with pytest.raises(DeviceUnavailableError, match=r"'mps'"):
        resolve_device("mps")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "mps:1", "cpu:0", "", "cuda:-1"])
def test_unknown_spec(spec):
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device(spec)


def test_device_error_is_a_runtime_error():
    assert issubclass(DeviceUnavailableError, RuntimeError)


# ----------------------------------------------------------------------------- claim_gpu helpers


def _hold(lock_dir: str, visible, chosen, release, timeout: float = 5.0) -> None:
    """Child process: claim a GPU, report it (and what CUDA_VISIBLE_DEVICES became), hold."""
    try:
        with claim_gpu(Path(lock_dir), visible, timeout=timeout, poll_interval=0.05) as dev:
            chosen.put((dev, os.environ.get("CUDA_VISIBLE_DEVICES")))
            release.wait(30)
    except TimeoutError:
        chosen.put(("timeout", None))


def _crash_holding(lock_dir: str, visible, chosen) -> None:
    with claim_gpu(Path(lock_dir), visible, timeout=5, poll_interval=0.05) as dev:
        chosen.put(dev)
        os._exit(3)  # dies without releasing anything


def _start(target, *args):
    p = FORK.Process(target=target, args=args)
    p.start()
    return p


def _join(*procs):
    for p in procs:
        p.join(30)
        assert not p.is_alive()


# ----------------------------------------------------------------------------- claim_gpu


def test_claim_sets_and_restores_visible_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    with claim_gpu(tmp_path) as dev:
        assert dev == "2"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"
        assert (tmp_path / "gpu-2.lock").exists()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_visible_argument_overrides_environment(tmp_path):
    with claim_gpu(tmp_path, ["5", "7"]) as dev:
        assert dev == "5"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_two_concurrent_processes_get_different_gpus(tmp_path):
    chosen, release = FORK.Queue(), FORK.Event()
    procs = [_start(_hold, str(tmp_path), ["0", "1"], chosen, release) for _ in range(2)]
    try:
        got = [chosen.get(timeout=30) for _ in procs]
        assert sorted(dev for dev, _ in got) == ["0", "1"]
        # each child restricted itself to its own device
        assert all(dev == env for dev, env in got)
        # both busy: a third claimant gives up after its timeout
        with pytest.raises(TimeoutError, match="no free GPU among 0,1"):
            with claim_gpu(tmp_path, ["0", "1"], timeout=0.3, poll_interval=0.05):
                pass
    finally:
        release.set()
        _join(*procs)
    # released: available again
    with claim_gpu(tmp_path, ["0", "1"], timeout=1) as dev:
        assert dev == "0"


def test_waiting_claim_gets_the_released_gpu(tmp_path):
    chosen, release = FORK.Queue(), FORK.Event()
    with claim_gpu(tmp_path, ["0", "1"]) as first:
        with claim_gpu(tmp_path, ["0", "1"]) as second:
            assert (first, second) == ("0", "1")
            waiter = _start(_hold, str(tmp_path), ["0", "1"], chosen, release, 20.0)
            with pytest.raises(queue.Empty):
                chosen.get(timeout=0.5)  # still waiting: both GPUs are held
        # "1" released here
        assert chosen.get(timeout=20)[0] == "1"
    release.set()
    _join(waiter)


def test_lock_of_a_crashed_process_is_freed(tmp_path):
    chosen = FORK.SimpleQueue()  # written synchronously: survives the os._exit below
    p = _start(_crash_holding, str(tmp_path), ["0", "1"], chosen)
    _join(p)
    assert p.exitcode == 3
    assert chosen.get() == "0"
    with claim_gpu(tmp_path, ["0", "1"], timeout=1) as dev:
        assert dev == "0"


def test_slurm_job_disables_picking(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    lock_dir = tmp_path / "locks"
    with claim_gpu(lock_dir) as dev:
        assert dev is None
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    with claim_gpu(lock_dir, ["0", "1"]) as dev:
        assert dev is None
    assert not lock_dir.exists()


@pytest.mark.parametrize("env", [None, "", "0", " 1 "])
def test_zero_or_one_device_does_nothing(tmp_path, monkeypatch, env):
    monkeypatch.setattr(devices, "_nvidia_smi_indices", lambda: [])
    if env is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    lock_dir = tmp_path / "locks"
    with claim_gpu(lock_dir) as dev:
        assert dev is None
        assert os.environ.get("CUDA_VISIBLE_DEVICES") == env
    assert not lock_dir.exists()


def test_visible_gpus_sources(monkeypatch):
    monkeypatch.setattr(devices, "_nvidia_smi_indices", lambda: ["0", "1", "2"])
    assert visible_gpus() == ["0", "1", "2"]  # unset: ask nvidia-smi
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 1")
    assert visible_gpus() == ["3", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []  # set but empty: no GPU at all


def test_refuses_after_cuda_initialised(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="before CUDA is initialised"):
        with claim_gpu(tmp_path, ["0", "1"]):
            pass


def test_device_ids_are_sanitised_in_lock_names(tmp_path):
    uuid = "GPU-1a2b/3c"
    with claim_gpu(tmp_path, [uuid, "GPU-ffff"]) as dev:
        assert dev == uuid
        assert (tmp_path / "gpu-GPU-1a2b_3c.lock").exists()


def test_jobs_per_gpu_fill_every_gpu_once_before_any_twice(tmp_path):
    held = []
    with contextlib.ExitStack() as stack:
        for _ in range(4):
            held.append(stack.enter_context(claim_gpu(tmp_path, ["0", "1"], slots=2, timeout=1)))
        assert held == ["0", "1", "0", "1"]
        with pytest.raises(TimeoutError, match=r"no free GPU among 0,1 \(2 job\(s\) each\)"):
            with claim_gpu(tmp_path, ["0", "1"], slots=2, timeout=0.2, poll_interval=0.05):
                pass
    with pytest.raises(ValueError, match="at least 1"):
        with claim_gpu(tmp_path, ["0", "1"], slots=0):
            pass
