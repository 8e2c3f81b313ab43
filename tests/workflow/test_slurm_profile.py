"""The Snakemake profiles under workflow/profiles.

Static checks run everywhere. The tests marked ``slurm`` submit a two-rule workflow and a
small study through the SLURM profile to a real cluster; they run only with ``HKD_SLURM_TEST=1``
(see .ci/slurm-cluster.sh for a single-node cluster that works for this, and the README).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from helpers import SMALL_STUDY, copy_tracked_files, merge, snakemake, study_config

ROOT = Path(__file__).resolve().parents[2]
# The SLURM executor polls the queue this many seconds after a submission, then 10 s later each time no
# job has finished: 1 s (not its default 40) keeps a chain of short jobs from waiting out the polls.
POLL = ["--slurm-init-seconds-before-status-checks", "1"]
PROFILES = ROOT / "workflow" / "profiles"
SLURM = PROFILES / "slurm" / "config.v8+.yaml"
LOCAL = PROFILES / "local" / "config.v8+.yaml"


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def _code_lines(path: Path) -> str:
    """The file without its comments."""
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


def _comments(path: Path) -> str:
    return "\n".join(line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line)


def _as_mapping(value) -> dict:
    """default-resources / resources may be written as a mapping or as KEY=VALUE items."""
    if isinstance(value, dict):
        return value
    out = {}
    for item in value:
        key, _, val = str(item).partition("=")
        out[key.strip()] = val.strip()
    return out


@pytest.fixture(scope="module")
def snakemake_options() -> set[str]:
    from snakemake.cli import get_argument_parser

    return {s for action in get_argument_parser()._actions for s in action.option_strings}


# ----------------------------------------------------------------------------- SLURM profile


def test_slurm_profile_core_settings():
    cfg = _load(SLURM)
    assert cfg["executor"] == "slurm"
    assert isinstance(cfg["jobs"], int) and cfg["jobs"] > 0
    assert cfg["retries"] == 0
    assert cfg["rerun-incomplete"] is True
    assert cfg["printshellcmds"] is True
    assert isinstance(cfg["latency-wait"], int) and cfg["latency-wait"] >= 5


def test_slurm_profile_polls_with_squeue():
    # sacct needs slurmdbd; on clusters without it a run never finishes.
    assert _load(SLURM)["slurm-status-command"] == "squeue"


def test_slurm_profile_sets_no_account():
    assert "slurm_account" not in _code_lines(SLURM)
    assert "slurm-account" not in _code_lines(SLURM)


def test_slurm_default_resources():
    res = _as_mapping(_load(SLURM)["default-resources"])
    assert str(res["slurm_partition"]).strip("'\"") == "main"
    assert int(res["runtime"]) > 0
    assert int(res["mem_mb"]) > 0
    # A global cpus_per_task would override cpus_per_gpu on every GPU rule; the
    # plugin already requests --cpus-per-task=<threads> without it.
    assert "cpus_per_task" not in res
    # GPUs are requested per rule (resources: gpu=1), never for every job.
    assert not {"gpu", "gpus", "gres", "gpu_model"} & set(res)


def test_slurm_profile_documents_partition_and_gpus():
    comments = _comments(SLURM)
    assert re.search(r"CHANGE THIS.*partition", comments)
    for word in ("gpu=1", "--gpus=1", "gpu_model", "cpus_per_gpu", "set-resources"):
        assert word in comments, word


def test_slurm_profile_keys_are_snakemake_options(snakemake_options):
    for key in _load(SLURM):
        assert f"--{key}" in snakemake_options, key


# ----------------------------------------------------------------------------- local profile


def test_local_profile(snakemake_options):
    cfg = _load(LOCAL)
    assert cfg["cores"] == "all"
    assert int(_as_mapping(cfg["resources"])["gpu"]) >= 1
    assert cfg["rerun-incomplete"] is True
    assert cfg["printshellcmds"] is True
    assert "executor" not in cfg or cfg["executor"] == "local"
    assert "number of GPUs" in _comments(LOCAL)
    for key in cfg:
        assert f"--{key}" in snakemake_options, key


# ----------------------------------------------------------------------------- with Snakemake

SNAKEFILE = textwrap.dedent(
    """
    rule all:
        input: "gpu.txt", "cpu.txt"

    rule gpu_step:
        output: "gpu.txt"
        resources: gpu=1
        shell: "echo CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}} SLURM_JOB_ID=${{SLURM_JOB_ID:-none}} > {output}"

    rule cpu_step:
        output: "cpu.txt"
        shell: "echo CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}} SLURM_JOB_ID=${{SLURM_JOB_ID:-none}} > {output}"
    """
)


def _snakemake(workdir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    (workdir / "Snakefile").write_text(SNAKEFILE)
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--directory", str(workdir), "--snakefile",
         str(workdir / "Snakefile"), *args],
        cwd=workdir, capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.parametrize("profile", [SLURM.parent, LOCAL.parent], ids=["slurm", "local"])
def test_profiles_accepted_by_snakemake(tmp_path, profile):
    proc = _snakemake(tmp_path, "--profile", str(profile), "--dry-run")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    gpu_block = out[out.index("rule gpu_step:"):]
    gpu_resources = re.search(r"resources: (.*)", gpu_block).group(1)
    assert "gpu=1" in gpu_resources
    cpu_block = out[out.index("rule cpu_step:"):]
    assert "gpu=" not in re.search(r"resources: (.*)", cpu_block).group(1)
    if profile == SLURM.parent:
        assert "slurm_partition=main" in gpu_resources


@pytest.mark.slurm
@pytest.mark.budget(900)  # jobs submitted, queued and polled on a real cluster
@pytest.mark.skipif(os.environ.get("HKD_SLURM_TEST") != "1", reason="needs a SLURM cluster: set HKD_SLURM_TEST=1")
def test_workflow_runs_on_slurm(tmp_path):
    assert shutil.which("sbatch") and shutil.which("squeue"), "SLURM client commands not found"
    proc = _snakemake(
        tmp_path, "--profile", str(SLURM.parent), "--verbose",
        *POLL, timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]

    calls = [line for line in out.splitlines() if line.startswith("sbatch call:")]
    gpu_calls = [c for c in calls if "--comment rule_gpu_step" in c]
    cpu_calls = [c for c in calls if "--comment rule_cpu_step" in c]
    assert len(gpu_calls) == 1 and len(cpu_calls) == 1, calls
    head = lambda call: call.split("--wrap", 1)[0]  # noqa: E731 - options before the job command
    assert "--gpus=1" in head(gpu_calls[0])
    assert "--gpus" not in head(cpu_calls[0]) and "--gres" not in head(cpu_calls[0])
    for call in calls:
        assert "-p main" in head(call)
        assert " -A " not in head(call)

    gpu_txt = (tmp_path / "gpu.txt").read_text()
    cpu_txt = (tmp_path / "cpu.txt").read_text()
    assert "SLURM_JOB_ID=none" not in gpu_txt + cpu_txt
    assert "CUDA_VISIBLE_DEVICES=unset" not in gpu_txt  # SLURM assigned the GPU


GPU_RULES = {"train_teacher", "teacher_cache"}  # asking for --gpus; bundled students ask with --gres
LIGHT_RULES = {"tables", "figures", "hypotheses", "describe_data"}  # localrules: run on the submitting host


BUNDLE_OF = dict(item.split("=") for item in _load(SLURM)["groups"])  # rule -> the SLURM profile's group
BUNDLES = set(BUNDLE_OF.values())
GPU_BUNDLES = {BUNDLE_OF[rule] for rule in ("train_student", "train_scratch")}  # they ask with --gres=gpu:1


def rule_of(sbatch_call: str) -> str:
    """Rule or bundle name from the slurm plugin's `--comment rule_<name>[_wildcards_<values>]`; a bundle's
    comment is `rule_<group>_<its rules>`."""
    comment = re.search(r"--comment rule_(\S+)", sbatch_call).group(1)
    name = comment.split("_wildcards_", 1)[0]
    return max((group for group in BUNDLES if name.startswith(group + "_")), key=len, default=name)


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(1500)
@pytest.mark.budget(1500)  # a small study through the cluster's queue
@pytest.mark.skipif(os.environ.get("HKD_SLURM_TEST") != "1", reason="needs a SLURM cluster: set HKD_SLURM_TEST=1")
def test_small_study_runs_end_to_end_on_slurm(tmp_path):
    """A small study (helpers.SMALL_STUDY with two widths: one or more of every rule the default runs) through
    the SLURM profile: the teacher's GPU rules get --gpus=1; the two scratch students share one allocation
    and one GPU (--gres=gpu:1), the two distilled students another; their evaluations (internal and
    external cohort) go four to an allocation without a GPU; light rules run on the submitting host."""
    root = copy_tracked_files(tmp_path / "repo")
    out = tmp_path / "study"
    two_widths = merge(copy.deepcopy(SMALL_STUDY), {"students": {"widths": ["0.25", "0.5"]}})
    (root / "config.yaml").write_text(yaml.safe_dump(study_config(two_widths, str(out))))
    # --cores: the bundles' CPUs capped at the test node's (the profile's 8 are a GPU node's)
    proc = snakemake(root, "--profile", str(root / "workflow" / "profiles" / "slurm"), "--verbose", *POLL,
                     "--cores", str(os.cpu_count()), timeout=1500)
    log = proc.stdout + proc.stderr
    (tmp_path / "snakemake.log").write_text(log)
    assert proc.returncode == 0, log[-6000:]
    calls = [line.split("--wrap", 1)[0] for line in log.splitlines() if line.startswith("sbatch call:")]
    submitted = sorted(rule_of(c) for c in calls)
    assert submitted == sorted(["phantom", "split", "prepare", "train_teacher", "teacher_cache", "scratch_students",
                                "students", "evaluate_teacher", "scratch_evaluations", "evaluations",
                                "context", "cost", "export_student", "export_student",
                                # the external cohort (data.external: auto) is generated, split and prepared;
                                # its students' evaluations share the bundles of the internal ones
                                "phantom_external", "split_external", "prepare_external",
                                "evaluate_teacher_external"]), submitted
    for call in calls:
        rule = rule_of(call)
        assert ("--gpus=1" in call) == (rule in GPU_RULES), call
        assert ("--gres=gpu:1" in call) == (rule in GPU_BUNDLES), call
        assert "-p main" in call and " -A " not in call, call
    bundles = {rule_of(c): c for c in calls if rule_of(c) in BUNDLES}
    assert all("--cpus-per-task=2" in bundles[b] for b in GPU_BUNDLES), bundles  # two students side by side
    trained = (out / "models" / "students").glob("*/w*/s*/best.pt")
    assert sorted((p.parts[-4], p.parts[-3]) for p in trained) == [
        ("logits", "w0.25"), ("logits", "w0.5"), ("scratch", "w0.25"), ("scratch", "w0.5")]
    for rule in LIGHT_RULES:  # ran, but not through sbatch
        assert re.search(rf"^localrule {rule}:", log, re.M), rule
    for name in ("hypotheses.csv", "tables/summary.csv", "tables/organs.csv", "context.csv",
                 "figures/overlays.png", "figures/dice_vs_params.png"):
        assert (out / name).stat().st_size > 0, name
