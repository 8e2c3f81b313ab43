"""The Snakemake workflow: the DAG builds for every study config, lints clean, rejects bad config, and
each rule's code inputs follow its command's imports (``hkd/workflow_deps.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import yaml

import helpers
from helpers import REPO, default_config, merge, runnable
from hkd.workflow_deps import command_modules

CONFIGS = sorted((REPO / "workflow" / "configs").glob("*.yaml"))


def snakemake(*args, process=False):
    return helpers.snakemake(REPO, *args, process=process)


def test_dry_run_of_the_default_config(tmp_path):
    """The command line itself, in a new process, as a user types it."""
    result = snakemake("-n", "--cores", "2", "--config", f"out={tmp_path}", process=True)
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
    """Absolute, relative and from-imports, package __init__ files, function-level imports, the functions
    of its module a command calls (not the module's other commands), and registries that import modules by
    name: all of their modules, or those a job names."""
    root = _package(tmp_path, {
        "hkd/__init__.py": "",
        "hkd/cli.py": """
            import importlib
            from hkd.core import base

            COMMANDS = {"one": "hkd.cmds.first", "two": "hkd.cmds.first", "three": "hkd.cmds.second"}

            def main(name):
                importlib.import_module(COMMANDS[name])
        """,
        "hkd/cmds/__init__.py": "",
        "hkd/cmds/first.py": """
            from hkd.core import args

            def _helper():
                from hkd.extra import thing

            def parser_one(sub):
                from hkd.core import opts

            def cmd_one(args):
                import hkd.reg as reg
                _helper()

            def parser_two(sub):
                pass

            def cmd_two(args):
                from hkd.pkg import leaf
                from hkd import readers
        """,
        "hkd/cmds/second.py": "from hkd import unused\ndef parser_three(sub):\n    pass\n",
        "hkd/core/__init__.py": "",
        "hkd/core/base.py": "",
        "hkd/core/args.py": "",
        "hkd/core/opts.py": "",
        "hkd/extra.py": "def f():\n    from .pkg.deep import g\n",
        "hkd/pkg/__init__.py": "",
        "hkd/pkg/leaf.py": "from . import sibling\n",
        "hkd/pkg/sibling.py": "",
        "hkd/pkg/deep.py": "",
        "hkd/reg/__init__.py": "import importlib\n"
                               "def get(name):\n"
                               "    return importlib.import_module(f'{__name__}.{name}')\n",
        "hkd/reg/a.py": "",
        "hkd/reg/b.py": "",
        "hkd/readers.py": "import importlib\nREADERS = {'x': 'hkd.pkg.deep', 'y': 'hkd.unused'}\n"
                          "def read(f):\n    return importlib.import_module(READERS[f])\n",
        "hkd/unused.py": "",
    })
    common = {"hkd/__init__.py", "hkd/cli.py", "hkd/core/__init__.py", "hkd/core/base.py", "hkd/cmds/__init__.py",
              "hkd/cmds/first.py", "hkd/core/args.py"}
    one = common | {"hkd/core/opts.py", "hkd/extra.py", "hkd/pkg/__init__.py", "hkd/pkg/deep.py",
                    "hkd/reg/__init__.py"}
    assert set(command_modules("one", root)) == one | {"hkd/reg/a.py", "hkd/reg/b.py"}
    assert set(command_modules("one", root, ["hkd.reg.b"])) == one | {"hkd/reg/b.py"}
    two = common | {"hkd/pkg/__init__.py", "hkd/pkg/leaf.py", "hkd/pkg/sibling.py", "hkd/readers.py"}
    assert set(command_modules("two", root)) == two | {"hkd/pkg/deep.py", "hkd/unused.py"}
    assert set(command_modules("two", root, ["hkd.pkg.deep"])) == two | {"hkd/pkg/deep.py"}
    with pytest.raises(ValueError, match="cmd_three"):
        command_modules("three", root)
    with pytest.raises(ValueError, match="no command 'four'"):
        command_modules("four", root)


def test_every_cli_command_has_its_code_inputs():
    """Each subcommand of the real CLI resolves to existing files; the dispatcher runs no command module
    but the command's own, and no data reader; a job runs its own method, and no other."""
    from hkd.cli import COMMANDS, build_parser

    assert set(build_parser()._subparsers._group_actions[0].choices) == set(COMMANDS)
    methods = {f"hkd/distill/{p.name}" for p in (REPO / "hkd" / "distill").glob("*.py")} - {
        "hkd/distill/__init__.py", "hkd/distill/base.py", "hkd/distill/functional.py"}
    readers = {"hkd/data/readers/rawdata.py", "hkd/data/readers/kits19_lits.py", "hkd/data/readers/transunet.py",
               "hkd/data/downloaders/synapse.py", "hkd/data/downloaders/kits19.py"}
    for command, module in COMMANDS.items():
        modules = set(command_modules(command, REPO))
        assert {"hkd/cli.py", "hkd/__init__.py", module.replace(".", "/") + ".py"} <= modules, command
        assert not {m.replace(".", "/") + ".py" for m in COMMANDS.values()} - {module.replace(".", "/") + ".py"} \
            & modules, command
        assert all((REPO / m).is_file() for m in modules), command
    for command in ("train", "teacher-cache"):
        assert set(command_modules(command, REPO, ["hkd.distill.hlfd"])) & methods == {"hkd/distill/hlfd.py"}
    # a teacher cache is built from un-augmented slices: editing augmentation reruns no cache
    assert "hkd/train/augment.py" not in command_modules("teacher-cache", REPO, ["hkd.distill.logits"])
    assert set(command_modules("train", REPO, ["hkd.distill.scratch"])) & methods == {"hkd/distill/scratch.py"}
    assert set(command_modules("train-cohort", REPO, ["hkd.distill.logits", "hkd.distill.scratch"])) & methods == {
        "hkd/distill/logits.py", "hkd/distill/scratch.py"}
    assert set(command_modules("split", REPO, ["hkd.data.readers.rawdata"])) & readers == {
        "hkd/data/readers/rawdata.py"}
    assert set(command_modules("prepare", REPO, ["hkd.data.readers.kits19_lits"])) & readers == {
        "hkd/data/readers/kits19_lits.py"}
    for command in ("phantom", "describe-data", "evaluate", "tables", "hypotheses", "context", "figures",
                    "overview"):
        modules = set(command_modules(command, REPO))
        assert not modules & (methods | readers | {"hkd/distill/__init__.py", "hkd/train/trainer.py"}), command
    assert "hkd/train/teacher_cache.py" in command_modules("teacher-cache", REPO)
    assert "hkd/models/base.py" in command_modules("teacher-cache", REPO)
    assert not {m for m in command_modules("tables", REPO) if m.startswith(("hkd/figures", "hkd/train"))}


def test_a_chain_waits_for_its_assistant_and_declares_its_method_only(tmp_path):
    """assistant.yaml: each chain's student trains from its assistant's checkpoint of the same seed, by its own
    rule, and declares the code of its method alone (editing logits.py reruns no latent chain)."""
    result = snakemake("-n", "-p", "--configfile", str(REPO / "workflow" / "configs" / "assistant.yaml"),
                       "--config", f"out={tmp_path}/out")
    assert result.returncode == 0, result.stderr
    jobs = [job for job in result.stdout.split("\nrule ") if job.startswith("train_chain:")]
    assert len(jobs) == 2 * 3  # two chains into 0.4M, three seeds
    latent = [job for job in jobs if "method=latent@latent_w1.5," in job]
    assert len(latent) == 3
    for job in latent:
        inputs = job.split("input: ", 1)[1].split("\n", 1)[0].split(", ")
        seed = job.split("seed=", 1)[1].split("\n", 1)[0].strip()
        assert f"{tmp_path}/out/models/students/latent/w1.5/s{seed}/best.pt" in inputs
        assert "hkd/distill/latent.py" in inputs and "hkd/distill/logits.py" not in inputs
