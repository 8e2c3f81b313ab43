"""Conda environments: every rule has one, and its pins agree with pyproject.toml.

Conda is not available where the tests run, so the files are checked statically.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request

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
    n_rules = len(re.findall(r"^\s*rule \w+:", rules, re.M))  # also rules defined under an `if`
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


def _index_unreachable() -> str | None:
    """Why pip's package index cannot be reached from here, or None when it can."""
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/pip/"
    try:
        urllib.request.urlopen(url, timeout=15).close()
    except OSError as err:
        return f"package index {url} unreachable: {err}"
    return None


def _conda_pins(env: dict) -> list[str]:
    """The env's conda packages as pip constraints (conda installs them before its pip step)."""
    pins = []
    for dep in env["dependencies"]:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)=([0-9][^\s=]*)", dep) if isinstance(dep, str) else None
        if m and m.group(1) not in ("python", "pip"):
            pins.append(f"{m.group(1)}=={m.group(2)}")
    return pins


@pytest.mark.slow
@pytest.mark.install
@pytest.mark.parametrize("path", ENVS, ids=[p.stem for p in ENVS])
def test_conda_pip_step_resolves_with_dependencies(path, tmp_path):
    """Replays conda's pip step: Snakemake copies the env file to .snakemake/conda/ and conda runs pip
    there on the pip entries as a requirements file, after installing the conda packages. Every entry,
    the project's own (found through HKD_SOURCE) with all its requirements, must resolve against the
    conda pins, at the pinned versions, without the resolver backtracking."""
    rules = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert "os.environ.update(HKD_SOURCE=workflow.basedir)" in rules  # the main Snakefile's folder: REPO
    env = yaml.safe_load(path.read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    if sys.version_info[:2] != tuple(int(x) for x in python.split("=")[1].split(".")[:2]):
        pytest.skip(f"{path.name} is for {python}; this interpreter is {sys.version.split()[0]}")
    reason = _index_unreachable()
    if reason:
        print(reason)
        pytest.skip(reason)
    copy_dir = tmp_path / ".snakemake" / "conda"
    copy_dir.mkdir(parents=True)
    entries = env["dependencies"][-1]["pip"]
    (copy_dir / "condaenv.requirements.txt").write_text("\n".join(entries) + "\n")
    (copy_dir / "conda.constraints.txt").write_text("\n".join(_conda_pins(env)) + "\n")
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                          "--report", "report.json", "-r", "condaenv.requirements.txt",
                          "-c", "conda.constraints.txt"],
                         cwd=copy_dir, env={**os.environ, "HKD_SOURCE": str(REPO)}, capture_output=True, text=True)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "looking at multiple versions" not in run.stdout + run.stderr, "the resolver backtracked"
    chosen = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
              for item in json.loads((copy_dir / "report.json").read_text())["install"]}
    assert "hkd" in chosen and "snakemake" in chosen and "synapseclient" in chosen
    pip_pins = {k: v for k, v in _pins(env).items() if k not in ("python", "pip")}
    for name, version in {**pip_pins, **dict(p.split("==") for p in _conda_pins(env))}.items():
        assert chosen.get(canonicalize_name(name), "").split("+")[0] == version, \
            f"{path.name}: pins {name}=={version}, pip would install {chosen.get(canonicalize_name(name))}"


@pytest.mark.slow
@pytest.mark.install
@pytest.mark.parametrize("extra", ["", "[test]", "[synapse]"])
def test_pip_install_of_the_project_resolves_without_backtracking(extra, tmp_path):
    """What the README's install commands (and the Synapse extra) ask pip to resolve, from a copy of
    the project, in a fresh resolution (nothing already installed counts)."""
    reason = _index_unreachable()
    if reason:
        print(reason)
        pytest.skip(reason)
    src = tmp_path / "hkd"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "hkd", src / "hkd", ignore=shutil.ignore_patterns("__pycache__"))
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                          "--report", "report.json", f".{extra}"], cwd=src, capture_output=True, text=True)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    looked = re.findall(r"looking at multiple versions of (\S+)", run.stdout + run.stderr)
    assert not looked, f"the resolver backtracked over {sorted(set(looked))}"
    chosen = {canonicalize_name(item["metadata"]["name"])
              for item in json.loads((src / "report.json").read_text())["install"]}
    assert ("synapseclient" in chosen) == (extra == "[synapse]")


def test_download_without_the_synapse_extra_says_how_to_install_it(monkeypatch, tmp_path):
    from hkd.data.downloaders.synapse import download
    from hkd.errors import DataError

    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", "token-for-the-test")
    monkeypatch.setitem(sys.modules, "synapseclient", None)  # as after a plain install: import fails
    with pytest.raises(DataError, match=r"pip install 'hkd\[synapse\]'") as err:
        download("syn3379050", tmp_path / "RawData.zip")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "RawData.zip").exists()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any(canonicalize_name(Requirement(d).name) == "synapseclient" for d in project["dependencies"])
    assert any(Requirement(d).name == "synapseclient" for d in project["optional-dependencies"]["synapse"])


def test_optional_packages_are_imported_only_through_extras_and_their_extras_exist():
    """hkd/extras.py names each optional module's extra; pyproject.toml installs it there and not in the
    plain install; no hkd module imports one by a statement (which would fail without the extra's line)."""
    import ast

    from hkd.extras import EXTRAS

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    plain = {canonicalize_name(Requirement(d).name) for d in project["dependencies"]}
    extras = {name: {canonicalize_name(Requirement(d).name) for d in deps}
              for name, deps in project["optional-dependencies"].items()}
    for module, (dist, extra) in EXTRAS.items():
        assert canonicalize_name(dist) in extras.get(extra, set()), f"hkd[{extra}] does not install {dist} ({module})"
        assert canonicalize_name(dist) not in plain, f"{dist} is in the plain install: {module} is no extra's"
    assert set(extras) - {"test"} == {extra for _, extra in EXTRAS.values()}, "an extra no module needs"
    for path in sorted((REPO / "hkd").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                assert name.partition(".")[0] not in EXTRAS, \
                    f"{path.relative_to(REPO)}:{node.lineno} imports {name} (use hkd.extras.require)"


def test_a_missing_optional_package_is_one_line_naming_its_extra(monkeypatch):
    from hkd import extras

    monkeypatch.setitem(sys.modules, "monai", None)  # as if not installed
    with pytest.raises(extras.MissingExtra) as err:
        extras.require("monai.networks.nets", "arch 'monai'")
    assert str(err.value) == "arch 'monai' needs the monai package, which is not installed: pip install 'hkd[monai]'"
    with pytest.raises(KeyError, match="not an optional package"):
        extras.check("numpy", "x")  # the plain install's packages are imported by statements
    assert extras.require("einops", "SwinUNETR").__name__ == "einops"  # installed: the module itself
