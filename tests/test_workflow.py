"""The Snakemake workflow: the DAG builds for every study config, lints clean, rejects bad config, and
each rule's code inputs follow its command's imports (``hkd/workflow_deps.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import yaml

from helpers import REPO, default_config, merge, runnable
from hkd.workflow_deps import command_modules

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
CONFIGS = sorted((REPO / "workflow" / "configs").glob("*.yaml"))


def snakemake(*args, cwd=REPO):
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True)


def test_dry_run_of_the_default_config(tmp_path):
    result = snakemake("-n", "--cores", "2", "--config", f"out={tmp_path}")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    for rule in ("phantom", "split", "prepare", "train_teacher", "train_student"):
        assert rule in out


@pytest.mark.parametrize("configfile", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_dry_run_of_each_study_config(configfile, tmp_path):
    configfile = runnable(configfile, tmp_path)
    result = snakemake("-n", "--cores", "2", "--configfile", str(configfile), "--config", f"out={tmp_path}/out")
    assert result.returncode == 0, result.stderr


def report_graph_nodes(d3dag: dict) -> list[str]:
    """The nodes of the rule graph ``snakemake --report`` draws: one per rule per level of the job DAG, a
    level being the jobs whose dependencies all lie in earlier levels (Snakemake's ``rulegraph_spec``)."""
    rule = {n["id"]: n["value"]["rule"] for n in d3dag["nodes"]}
    deps = {i: set() for i in rule}
    for link in d3dag["edges"]:
        deps[link["v"]].add(link["u"])
    depth: dict[int, int] = {}

    def level(i: int) -> int:
        if i not in depth:
            depth[i] = 1 + max((level(d) for d in deps[i]), default=-1)
        return depth[i]

    return [r for r, _ in {(rule[i], level(i)) for i in rule if rule[i] != "all"}]


@pytest.mark.parametrize("configfile", [REPO / "config.yaml", *CONFIGS], ids=["default", *(c.stem for c in CONFIGS)])
def test_report_rule_graph_has_one_node_per_rule(configfile, tmp_path):
    """Scratch students (which need no teacher) wait for the data summary, which sits at the teacher's
    depth, so every student and every evaluation shares one level and the report draws each rule once."""
    configfile = runnable(configfile, tmp_path)
    result = snakemake("--d3dag", "--forceall", "--configfile", str(configfile), "--config", f"out={tmp_path}/out")
    assert result.returncode == 0, result.stderr
    nodes = report_graph_nodes(json.loads(result.stdout[result.stdout.index("{"):]))
    assert sorted(nodes) == sorted(set(nodes)), sorted(nodes)


def test_lint_has_no_findings():
    result = snakemake("--lint")
    assert result.returncode == 0 and "good condition" in result.stdout + result.stderr, result.stdout


def test_snakefmt_check():
    files = [str(REPO / "Snakefile"), *map(str, sorted((REPO / "workflow" / "rules").glob("*.smk")))]
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _with(tmp_path, patch: dict) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(merge(default_config(), patch)))
    return ["-n", "--cores", "1", "--configfile", str(path)]


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"data": {"image_size": -64}}, "image_size"),
        ({"data": {"phantom": {"cases": -1}}}, "cases"),
        ({"data": {"split": {"ratios": [0.6, 0.3, 0.2]}}}, "data.split.ratios"),
        ({"data": {"colour": "blue"}}, "colour"),
        ({"unknown_key": 1}, "unknown_key"),
        ({"students": {"methods": ["scratch", "telepathy"]}}, "students.methods"),
        ({"data": {"hu_window": [275, -125]}}, "data.hu_window"),
        ({"data": {"source": "zip"}}, "data.path"),
        ({"data": {"source": "lits"}}, "data.path: required for data.source 'lits'"),
        ({"data": {"source": "kits19", "path": "/no/such/kits19"}}, "data.path: /no/such/kits19 does not exist"),
        ({"data": {"phantom": {"tumours": {}}}}, "data.phantom.tumours"),
        ({"data": {"phantom": {"layout": "lits", "tumours": {"count": [3, 1]}}}}, "data.phantom.tumours.count"),
        ({"data": {"task": "tumour"}}, "data.classes: task 'tumour' needs the classes [background, tumour]"),
        ({"data": {"scale": [-1, 2]}}, "data.scale"),
        ({"train": {"loss": "hinge"}}, "train.loss"),
        ({"device": "gpu"}, "device"),
    ],
)
def test_invalid_config_is_rejected_naming_the_key(tmp_path, patch, message):
    result = snakemake(*_with(tmp_path, patch))
    assert result.returncode != 0
    assert message in result.stderr + result.stdout


def test_shared_training_recipe_reaches_every_run_and_overrides_apply(tmp_path):
    """`train` is the shared recipe; `teacher.train` / `students.train` override single keys only."""
    args = _with(tmp_path, {"train": {"lr": 0.0042, "batch_size": 5}, "teacher": {"train": {"epochs": 3}},
                            "students": {"train": {"lr": 0.0007}}})
    result = snakemake(*args, "-p", "--config", f"out={tmp_path}/out")
    assert result.returncode == 0, result.stderr
    commands = [line.split("Shell command: ", 1)[1] for line in (result.stdout + result.stderr).splitlines()
                if line.startswith("Shell command: hkd train")]
    teacher = next(c for c in commands if '"arch":"transunet"' in c and '"method":"scratch"' in c)
    student = next(c for c in commands if '"arch":"squeezeunet"' in c)
    assert '"lr":0.0042' in teacher and '"epochs":3' in teacher and '"batch_size":5' in teacher
    assert '"lr":0.0007' in student and '"batch_size":5' in student


# ------------------------------------------------------------------ code inputs from the imports

def _package(root, files: dict[str, str]):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_command_modules_follow_every_kind_of_import(tmp_path):
    """Absolute, relative and from-imports, package __init__ files, function-level imports, the cli
    helpers a command calls, and a registry that imports its package's modules by name."""
    root = _package(tmp_path, {
        "hkd/__init__.py": "",
        "hkd/cli.py": """
            from hkd.core import base

            def _helper():
                from hkd.extra import thing

            def cmd_one(args):
                import hkd.reg as reg
                _helper()

            def cmd_two(args):
                from hkd.pkg import leaf
        """,
        "hkd/core/__init__.py": "",
        "hkd/core/base.py": "",
        "hkd/extra.py": "def f():\n    from .pkg.deep import g\n",
        "hkd/pkg/__init__.py": "",
        "hkd/pkg/leaf.py": "from . import sibling\n",
        "hkd/pkg/sibling.py": "",
        "hkd/pkg/deep.py": "",
        "hkd/reg/__init__.py": "import importlib, pkgutil\n"
                               "for m in pkgutil.iter_modules(__path__):\n"
                               "    importlib.import_module(f'{__name__}.{m.name}')\n",
        "hkd/reg/a.py": "",
        "hkd/reg/b.py": "",
        "hkd/unused.py": "",
    })
    common = {"hkd/__init__.py", "hkd/cli.py", "hkd/core/__init__.py", "hkd/core/base.py"}
    assert set(command_modules("one", root)) == common | {
        "hkd/extra.py", "hkd/pkg/__init__.py", "hkd/pkg/deep.py", "hkd/reg/__init__.py", "hkd/reg/a.py",
        "hkd/reg/b.py"}
    assert set(command_modules("two", root)) == common | {"hkd/pkg/__init__.py", "hkd/pkg/leaf.py",
                                                         "hkd/pkg/sibling.py"}
    with pytest.raises(ValueError, match="cmd_three"):
        command_modules("three", root)


def test_every_cli_command_has_its_code_inputs():
    """Each subcommand of the real CLI resolves, and the distillation registry counts as all its methods."""
    from hkd.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    distill = {f"hkd/distill/{p.name}" for p in (REPO / "hkd" / "distill").glob("*.py")}
    for command in commands:
        modules = set(command_modules(command, REPO))
        assert {"hkd/cli.py", "hkd/__init__.py"} <= modules, command
        assert all((REPO / m).is_file() for m in modules), command
        if "hkd/distill/__init__.py" in modules:
            assert distill <= modules, command
    assert "hkd/train/teacher_cache.py" in command_modules("teacher-cache", REPO)
    assert "hkd/models/base.py" in command_modules("teacher-cache", REPO)
    assert not {m for m in command_modules("tables", REPO) if m.startswith(("hkd/figures", "hkd/train"))}
