"""Conda environments: every rule has one, and its pins agree with pyproject.toml.

Conda is not available where the tests run, so the files are checked statically.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO

ENVS = sorted((REPO / "envs").glob("*.yaml"))
NOT_IN_RULE_ENVS = {"snakemake", "snakemake-executor-plugin-slurm"}  # the workflow manager's own


def _pins(env: dict) -> dict[str, str]:
    pins = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*={1,2}\s*([0-9][^\s]*)", item)
            if m:
                pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def test_every_rule_declares_an_existing_conda_env():
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    n_rules = len(re.findall(r"^rule \w+:", rules, re.M))
    assert rules.count("conda:") == n_rules
    assert "ENV = os.path.join(workflow.basedir, \"envs\", \"hkd.yaml\")" in rules
    assert ENVS


@pytest.mark.parametrize("path", ENVS, ids=[p.stem for p in ENVS])
def test_env_pins_satisfy_pyproject(path):
    env = yaml.safe_load(path.read_text())
    assert "conda-forge" in env["channels"]
    pins = _pins(env)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python.split("=")[1].startswith("3.11")
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name in NOT_IN_RULE_ENVS:
            continue
        assert name in pins, f"{path.name} does not pin {req.name}"
        assert req.specifier.contains(pins[name]), f"{path.name}: {name}=={pins[name]} outside {req.specifier}"
    assert "-e ${HKD_SOURCE}" in env["dependencies"][-1]["pip"]  # the project itself, from this checkout


@pytest.mark.parametrize("path", ENVS, ids=[p.stem for p in ENVS])
def test_conda_pip_step_finds_this_checkout_from_the_copied_env_file(path, tmp_path):
    """Snakemake copies the env file to .snakemake/conda/ and conda runs pip beside the copy,
    with the pip entries as a requirements file: the project's entry must resolve from there."""
    rules = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert "os.environ.update(HKD_SOURCE=workflow.basedir)" in rules  # the main Snakefile's folder: REPO
    env = yaml.safe_load(path.read_text())
    local = [line for line in env["dependencies"][-1]["pip"] if line.startswith("-e")]
    copy_dir = tmp_path / ".snakemake" / "conda"
    copy_dir.mkdir(parents=True)
    (copy_dir / "condaenv.requirements.txt").write_text("\n".join(local) + "\n")
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index",
                          "--no-build-isolation", "-r", "condaenv.requirements.txt"],
                         cwd=copy_dir, env={**os.environ, "HKD_SOURCE": str(REPO)}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Would install hkd-" in run.stdout
