"""How the workflow schedules training jobs: whether they ask for a GPU, and how a student gets its teacher.

Snakemake reads this when it parses the workflow (``workflow/rules/common.smk``); standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

from hkd.devices import visible_gpus  # torch is imported lazily

__all__ = ["GpuRequest", "gpu_request", "teacher_argument"]


@dataclass(frozen=True)
class GpuRequest:
    """Whether training jobs declare a GPU (`asks`), why, and whether they run under a cluster executor."""

    asks: bool
    why: str
    on_cluster: bool

    def resources(self, bundled: bool = False) -> dict:
        """The GPU request of a training job, spread into its resources; none for a job without a GPU.

        `gpu=1`; for rules that the SLURM profile bundles into group jobs (`bundled`), under a cluster
        executor, `gres="gpu:1"` instead: Snakemake adds up a number like `gpu` over a group's jobs that
        run side by side (four bundled students would ask for four GPUs), but passes an equal string
        through once, so a bundle asks SLURM for one GPU and its students share it. A job submitted on
        its own gets one GPU either way; on one machine `gpu=1` is what `--resources gpu=N` counts.
        """
        if not self.asks:
            return {}
        return {"gres": "gpu:1"} if bundled and self.on_cluster else {"gpu": 1}


def gpu_request(device: str, on_cluster: bool) -> GpuRequest:
    """Whether training jobs declare `resources: gpu=1`, and why, decided when the workflow is parsed.

    An explicit device decides by itself. With `auto` a job may land elsewhere: under a cluster
    executor (`on_cluster`) the job asks, so the scheduler gives it a GPU; on this machine it asks only
    when a CUDA device is visible.
    """
    if device.startswith("cuda"):
        return GpuRequest(True, f"device: {device}", on_cluster)
    if device != "auto":
        return GpuRequest(False, f"device: {device}", on_cluster)
    if on_cluster:
        return GpuRequest(
            True, "device: auto under a cluster executor (--jobs given): the job may run on a GPU node", on_cluster
        )
    gpus = visible_gpus()
    if gpus:
        return GpuRequest(True, f"device: auto and CUDA device(s) {','.join(gpus)} visible here", on_cluster)
    return GpuRequest(
        False, "device: auto and no CUDA device visible here (CUDA_VISIBLE_DEVICES, nvidia-smi)", on_cluster
    )


def teacher_argument(teacher: str | list) -> str:
    """The `hkd train` option that hands a student its teacher input (:meth:`hkd.study.runs.RunTable.teacher_input`)."""
    if not teacher:
        return ""
    flag = "--teacher-cache" if teacher.endswith(".h5") else "--teacher"
    return f"{flag} {teacher}"
