"""GPU resources are declared honestly: only training jobs, and only when they may get a GPU."""

from __future__ import annotations

import re

import pytest
import yaml

from helpers import REPO, snakemake

GPU_RULES = {"train_teacher", "teacher_cache", "train_student", "train_scratch", "train_cohort"}  # those planned


def dry_run(*args: str, cuda: str, tmp_path) -> tuple[dict[str, set[str]], list[str]]:
    """Resources of every planned job by rule, and the workflow's GPU log lines, from `snakemake -n`."""
    run = snakemake(REPO, "-n", "--config", f"out={tmp_path}/out", *args, env={"CUDA_VISIBLE_DEVICES": cuda})
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    resources: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if m and res:
            resources.setdefault(m.group(1), set()).update(r.strip() for r in res.group(1).split(","))
    return resources, [line for line in out.splitlines() if "a GPU:" in line]


def asks_for_gpu(resources: dict[str, set[str]]) -> set[str]:
    return {rule for rule, res in resources.items()
            if any((r.startswith("gpu=") and r != "gpu=0") or r == "gres=gpu:1" for r in res)}


# GPU rules the SLURM profile bundles: under a cluster executor they ask with gres=gpu:1
BUNDLED = GPU_RULES & {item.split("=")[0] for item in
                       yaml.safe_load((REPO / "workflow/profiles/slurm/config.v8+.yaml").read_text())["groups"]}


@pytest.mark.slow
def test_no_gpu_requested_where_none_is_visible(tmp_path):
    resources, log = dry_run(cuda="", tmp_path=tmp_path)
    assert {"train_teacher", "train_student"} <= set(resources)
    assert not asks_for_gpu(resources)
    assert not any(r.startswith("gpu") for res in resources.values() for r in res)  # jobs_per_gpu aside
    assert log == ["hkd: training jobs do not ask for a GPU: device: auto and no CUDA device visible here "
                   "(CUDA_VISIBLE_DEVICES, nvidia-smi)"]


@pytest.mark.slow
def test_training_jobs_ask_when_cuda_is_visible_or_under_a_cluster_executor(tmp_path):
    resources, log = dry_run(cuda="0", tmp_path=tmp_path)
    assert {"train_teacher", "train_student"} <= set(resources)
    assert asks_for_gpu(resources) == GPU_RULES & set(resources)
    assert len(log) == 1 and "CUDA device(s) 0 visible here" in log[0]

    assert not any("gres=gpu:1" in res for res in resources.values())  # one machine: gpu=1, what --resources counts

    resources, log = dry_run("--executor", "slurm", "--jobs", "4", cuda="", tmp_path=tmp_path)
    assert asks_for_gpu(resources) == GPU_RULES & set(resources)
    assert {rule for rule, res in resources.items() if "gres=gpu:1" in res} == BUNDLED & set(resources)
    assert len(log) == 1 and "cluster executor" in log[0]


@pytest.mark.slow
def test_explicit_cpu_device_never_asks(tmp_path):
    resources, log = dry_run("device=cpu", cuda="0", tmp_path=tmp_path)
    assert not asks_for_gpu(resources)
    assert log == ["hkd: training jobs do not ask for a GPU: device: cpu"]
