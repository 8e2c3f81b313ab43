"""The README's first command installs everything the default study runs.

The install part of that command (everything before ``snakemake``), read from the README, runs in a fresh
copy of the project with a fresh virtual environment, as a user's fresh clone would. Snakemake from that
environment plans the default study; each job's ``hkd`` files are the code inputs the plan lists for it
(``hkd/workflow_deps.py``), and every import statement of a third-party module in them must run in that
environment. Optional packages are imported through ``hkd.extras.require``, never by a statement, so what
a statement imports is what the job needs whatever its options.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers import REPO, copy_tracked_files
from test_envs import _index_unreachable, _pins

# Run in the fresh environment: each statement imported in turn; what fails, with its error, as JSON lines.
# Also the distributions that provide each top-level module, for the checks against pyproject and the env.
IMPORT_CHECK = """
import importlib.metadata, json, sys
statements = json.loads(sys.argv[1])
for statement in statements:
    try:
        exec(statement, {})
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"statement": statement, "error": error}))
print(json.dumps({"distributions": importlib.metadata.packages_distributions()}))
"""


def readme_run_command() -> str:
    """The README's first command: the first line of its first ``bash`` block."""
    block = re.search(r"```bash\n(.+?)\n```", (REPO / "README.md").read_text(), re.S)
    assert block, "README.md has no bash block"
    return block.group(1).strip()


def install_part(command: str) -> str:
    """The command's steps before the one that runs the study (``snakemake ...``)."""
    steps = [s.strip() for s in command.split("&&")]
    runs = [i for i, s in enumerate(steps) if s.startswith("snakemake")]
    assert runs and runs[0] == len(steps) - 1, f"the README's first command does not end by running snakemake: {command}"
    return " && ".join(steps[:-1])


def planned_code(dry_run: str) -> dict[str, set[str]]:
    """Rule -> the ``hkd`` files its jobs declare as inputs, from a dry run's job listing."""
    code: dict[str, set[str]] = defaultdict(set)
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", dry_run):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        inputs = re.search(r"^\s+input: (.+)$", block, re.M)
        if rule and inputs:
            code[rule.group(1)] |= {p for p in inputs.group(1).split(", ") if re.fullmatch(r"hkd/.+\.py", p)}
    return dict(code)


def third_party_imports(path: Path) -> set[str]:
    """The import statements (as code) of modules outside hkd and the standard library in one file, at any
    depth (a function-level import runs when the job calls the function)."""
    statements = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            statements |= {f"import {a.name}" for a in node.names if _outside(a.name)}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _outside(node.module):
            statements |= {f"from {node.module} import {a.name}" for a in node.names}
    return statements


def _outside(module: str) -> bool:
    top = module.partition(".")[0]
    return top != "hkd" and top not in sys.stdlib_module_names and top != "__future__"


def top_module(statement: str) -> str:
    return statement.split()[1].partition(".")[0]


@pytest.mark.slow
@pytest.mark.install
@pytest.mark.budget(420)
def test_the_readme_install_imports_everything_the_default_studys_jobs_import(tmp_path):
    reason = _index_unreachable()
    if reason:
        pytest.skip(reason)
    clone = copy_tracked_files(tmp_path / "hkd")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    # as from a shell without this test's environment: its bin folder off the PATH
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent)
    install = install_part(readme_run_command())
    assert "pip install" in install and ".venv" in install, install
    done = subprocess.run(["bash", "-c", install], cwd=clone, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{install}\n{(done.stdout + done.stderr)[-3000:]}"
    venv_bin = clone / ".venv" / "bin"

    plan = subprocess.run([str(venv_bin / "snakemake"), "-n", "--cores", "1"], cwd=clone, capture_output=True,
                          text=True, env={**env, "PATH": f"{venv_bin}{os.pathsep}{env['PATH']}"})
    assert plan.returncode == 0, (plan.stdout + plan.stderr)[-3000:]
    jobs = planned_code(plan.stdout + plan.stderr)
    assert {"train_teacher", "train_student", "export_student", "cost", "figures"} <= set(jobs), sorted(jobs)
    per_job = {rule: set().union(*(third_party_imports(clone / f) for f in files)) for rule, files in jobs.items()}
    statements = sorted(set().union(*per_job.values()))
    print("third-party modules per job of the default study:")
    for rule, found in sorted(per_job.items()):
        print(f"  {rule}: {', '.join(sorted({s.split()[1] for s in found}))}")

    checked = subprocess.run([str(venv_bin / "python"), "-c", IMPORT_CHECK, json.dumps(statements)], cwd=tmp_path,
                             capture_output=True, text=True, env=env)
    assert checked.returncode == 0, checked.stderr[-3000:]
    lines = [json.loads(line) for line in checked.stdout.splitlines() if line.startswith("{")]
    failed = {r["statement"]: r["error"] for r in lines if "statement" in r and r["error"]}
    assert not failed, "the README's install cannot run these imports of the default study's jobs: " + \
        "; ".join(f"{s} ({e}; jobs: {', '.join(r for r, found in per_job.items() if s in found)})"
                  for s, e in failed.items())

    # each module comes from a distribution the project asks for itself (not one that happens to come with
    # another), and the conda env pins it
    provides = lines[-1]["distributions"]
    declared = {canonicalize_name(Requirement(d).name)
                for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    pinned = set(_pins(yaml.safe_load((REPO / "envs" / "hkd.yaml").read_text())))
    for top in sorted({top_module(s) for s in statements}):
        dists = {canonicalize_name(d) for d in provides.get(top, [])}
        assert dists & declared, f"{top} (from {sorted(dists)}) is imported by a job but is no dependency in pyproject.toml"
        assert dists & pinned, f"{top} (from {sorted(dists)}) is imported by a job but envs/hkd.yaml does not pin it"
