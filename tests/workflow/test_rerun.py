"""Rerun only what changed: after the shared completed study (conftest ``default_study``), each kind of
change reruns exactly the jobs that depend on it, checked with dry runs on the study's copy of the
repository. The "Reruns" table of docs/usage.md is ``README_TABLE`` below, one test per row.

Code inputs: every job declares the ``hkd`` modules its command runs with its own method and reader
(``hkd/workflow_deps.py``), as paths relative to the project. Checked three ways: the declared files
are the helper's set for the command the job's shell runs; every module a job imported at run time
(``PYTHONPROFILEIMPORTTIME`` in its log) is declared; and editing modules plans exactly the jobs that
run them (every module is edited once, together with the modules run by the same jobs: one dry run
per such group).
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from helpers import REPO, STUDY, default_config, merge, runnable, snakemake
from hkd.chains import direct_method
from hkd.workflow_deps import command_modules, package_modules

pytestmark = pytest.mark.slow

DATA_JOBS = {"phantom", "split", "prepare"}
MODULES = package_modules(REPO)
# The hkd command each rule of the study runs (test_every_rule_declares_... checks this against its shell).
STUDY_COMMANDS = {"phantom": ("phantom",), "split": ("split",), "prepare": ("prepare",),
                  "describe_data": ("describe-data",), "train_teacher": ("train",),
                  "teacher_cache": ("teacher-cache",), "train_scratch": ("train",), "train_student": ("train",),
                  "evaluate_teacher": ("evaluate",), "evaluate_scratch": ("evaluate",), "evaluate_student": ("evaluate",),
                  "tables": ("tables",), "hypotheses": ("hypotheses",),
                  "figures": ("figures", "overview"), "context": ("context",), "cost": ("cost",),
                  "export_student": ("export",), "phantom_external": ("phantom",), "split_external": ("split",),
                  "prepare_external": ("prepare",), "evaluate_teacher_external": ("evaluate",),
                  "evaluate_scratch_external": ("evaluate",), "evaluate_student_external": ("evaluate",)}


def study_loads(rule: str, method: str | None) -> tuple[str, ...]:
    """What a job of the study (a phantom in the Synapse layout) makes the registries load: the data steps
    the RawData reader, a training job its own method (the teacher learns from the labels alone)."""
    if rule in ("split", "prepare", "split_external", "prepare_external"):  # the external cohort: a phantom too
        return ("hkd.data.readers.rawdata",)
    if rule == "train_teacher":
        return ("hkd.distill.scratch",)
    if rule in ("train_scratch", "train_student", "train_chain", "teacher_cache"):
        return (f"hkd.distill.{direct_method(method)}",)  # a chain's label runs its method
    if rule == "train_cohort":  # a cohort trains its study's methods at once
        return tuple(f"hkd.distill.{m}" for m in cohort_methods())
    return ()


def modules_of(commands, root, loads=()) -> set[str]:
    """The hkd files the rule's commands execute together."""
    return set().union(*(command_modules(c, root, loads) for c in commands))


def study_jobs(students: dict, cached: list[str]) -> dict[tuple[str, str | None], set[str]]:
    """(rule, method) of every job kind of the study -> the hkd files it runs."""
    jobs = {}
    methods = students["methods"]
    for rule, commands in STUDY_COMMANDS.items():
        if rule == "teacher_cache":
            keys = [(rule, m) for m in methods if m in cached]
        elif rule in ("train_student", "evaluate_student", "evaluate_student_external"):
            keys = [(rule, m) for m in methods if m != "scratch"]
        elif rule in ("train_scratch", "evaluate_scratch", "evaluate_scratch_external"):
            keys = [(rule, "scratch")]
        else:
            keys = [(rule, None)]
        for key in keys:
            jobs[key] = modules_of(commands, REPO, study_loads(*key))
    return jobs


# The "Reruns" table of docs/usage.md: change -> what reruns.
README_TABLE = {
    "Touching a file without changing it": "nothing",
    "The live-curve tracker (`train.tracker`)": "nothing (it changes no number; see [Watching "
                                                "training](#watching-training))",
    "An option of one method (`distill.latent.weight`)": "that method's students (and teacher cache, if it has "
                                                         "one), and the tables, figures, verdicts, cost table and "
                                                         "exported student of their width built from them",
    "A teacher setting (`teacher.train.lr`)": "the teacher, its feature caches and the distilled students; "
                                              "not the scratch students, not data preparation",
    "A figure function (`hkd/figures/curves.py`)": "the figures only",
    "A model (`hkd/models/squeezeunet.py`)": "every rule whose command imports `hkd.models`, the teacher's "
                                             "included (`hkd.models` imports both architectures)",
    "A method (`hkd/distill/hlfd.py`)": "that method's students, their evaluations, and the tables, figures, "
                                        "verdicts, cost table and exported student of their width built from them; "
                                        "not the teacher",
    "A reader or downloader the study does not use (`hkd/data/readers/transunet.py` for the phantom)": "nothing",
    "One command's module (`hkd/commands/evaluate.py`)": "the jobs of its commands, and what depends on them",
    "The dispatcher (`hkd/cli.py`)": "every job (each runs it)",
    "The project folder, copied or moved with its results": "nothing",
    "Any `hkd` module": "the jobs that run it (`hkd/workflow_deps.py`), and what depends on them",
}


@pytest.fixture(scope="module")
def study(default_study):
    return default_study.root


def dry_run(root: Path, *args: str) -> str:
    result = snakemake(root, "-n", "--cores", "1", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def planned_jobs(root: Path) -> dict[str, int]:
    """Rule -> job count of what a run would do now."""
    out = dry_run(root)
    if "Nothing to be done" in out:
        print("planned jobs: none")
        return {}
    table = out.split("Job stats:", 1)[1]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
            if m.group(1) not in ("total", "all")}
    print("planned jobs:", jobs)  # the rerun table, with `pytest -s tests/workflow/test_rerun.py`
    return jobs


def _edit_config(root: Path, patch: dict) -> None:
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), patch)))


def _config(root: Path) -> dict:
    return yaml.safe_load((root / "config.yaml").read_text())


def _edit(path: Path) -> None:
    """Change the content of a module (a comment line: Snakemake compares checksums, not meaning)."""
    path.write_text(path.read_text() + "\n# edited\n")


@pytest.fixture
def restore(study):
    """Undo a test's edits, content and modification time, so every test starts from the completed state."""
    paths = [study / "config.yaml", *(study / "hkd").rglob("*.py")]
    saved = {p: (p.read_bytes(), p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in paths}
    yield study
    for p, (data, atime, mtime) in saved.items():
        if p.read_bytes() != data or p.stat().st_mtime_ns != mtime:
            p.write_bytes(data)
            os.utime(p, ns=(atime, mtime))


# ------------------------------------------------------------------ what each rule declares and runs

def _job_blocks(out: str):
    """(rule, block text) of every job in a dry-run output printed with -p."""
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head and head.group(1) != "all":
            yield head.group(1), block


def _method(block: str) -> str | None:
    wildcards = re.search(r"^\s*wildcards: (.*)$", block, re.M)
    found = re.search(r"(?:^|, )method=([\w@.]+)", wildcards.group(1)) if wildcards else None
    return found.group(1) if found else None


@pytest.fixture(scope="module")
def rule_code(study, tmp_path_factory):
    """(rule, method) -> (its hkd command, its declared hkd files, its jobs' log files), from a forced dry
    run of the study and of every config in workflow/configs (for the download and extract rules)."""
    outputs = [("", dry_run(study, "--forceall", "-p"))]
    for config in sorted((study / "workflow" / "configs").glob("*.yaml")):
        out_dir = tmp_path_factory.mktemp(config.stem)
        name = config.stem
        config = runnable(config, tmp_path_factory.mktemp(f"{config.stem}-data"), root=study)
        outputs.append((name, dry_run(study, "--forceall", "-p", "--configfile", str(config), "--config",
                                      f"out={out_dir}")))
    jobs: dict[tuple[str, str | None], tuple[tuple[str, ...], set[str], list[Path]]] = {}
    for study_name, out in outputs:
        for rule, block in _job_blocks(out):
            shell = block.split("Shell command:", 1)[1]
            command = tuple(dict.fromkeys(re.findall(r"(?:^|\s)hkd ([\w-]+)", shell)))
            inputs = re.search(r"^\s*input: (.*)$", block, re.M).group(1).split(", ")
            assert not [f for f in inputs if os.path.isabs(f) and "/hkd/" in f], f"{rule}: absolute code paths"
            code = {f for f in inputs if f.startswith("hkd/")}
            log = re.search(r"^\s*log: (.*)$", block, re.M).group(1)
            key = (rule, _method(block))
            if study_name:  # the data steps of another study run its source's reader
                key = (rule, f"other study {study_name}") if rule in ("split", "prepare") else key
            known = jobs.setdefault(key, (command, code, []))
            assert known[:2] == (command, code), f"jobs {key} differ in command or code inputs"
            if not study_name:
                known[2].append(study / log)
    width = max(len(f"{r} {m or ''}") for r, m in jobs)
    print("\njob code inputs (hkd/ omitted):")
    for (rule, method), (command, code, _) in sorted(jobs.items(), key=str):
        name = f"{rule} {method or ''}"
        print(f"  {name:<{width}}  hkd {' + '.join(command)} ({len(code)}): {' '.join(sorted(c[4:] for c in code))}")
    return jobs


def test_every_job_declares_the_modules_its_command_and_method_run(rule_code, study):
    assert {"phantom", "download", "extract", "split", "prepare", "train_teacher", "teacher_cache",
            "train_scratch", "train_student", "evaluate_teacher", "evaluate_scratch", "evaluate_student", "tables",
            "hypotheses", "figures", "context"} <= {rule for rule, _ in rule_code}
    methods = {f"hkd/distill/{m}.py" for m in available_methods()}
    for (rule, method), (command, code, _) in rule_code.items():
        assert STUDY_COMMANDS.get(rule, command) == command, rule
        if not (method or "").startswith("other study"):
            assert code == modules_of(command, study, study_loads(rule, method)), (rule, method)
        assert code & methods == ({f"hkd/distill/{m}.py" for m in cohort_methods()} if rule == "train_cohort" else
                                  {f"hkd/distill/{direct_method(method)}.py"} if rule.startswith(("train_", "teacher_cache"))
                                  and rule != "train_teacher" else
                                  {"hkd/distill/scratch.py"} if rule == "train_teacher" else set()), (rule, method)
        if rule not in ("download", "extract", "split", "prepare"):  # the phantom's rules read no other source
            assert not code & {"hkd/data/downloaders/synapse.py", "hkd/data/downloaders/kits19.py",
                               "hkd/data/readers/kits19_lits.py", "hkd/data/readers/transunet.py"}, rule


def cohort_methods() -> list[str]:
    """The methods of the one study config whose students train in lock-step cohorts."""
    configs = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "workflow" / "configs").glob("*.yaml"))]
    (cohort,) = [c for c in configs if c.get("students", {}).get("lockstep")]
    return cohort["students"]["methods"]


def available_methods() -> list[str]:
    from hkd import distill

    return distill.available()


def _imported_at_run_time(log: Path, root: Path) -> set[str]:
    """The hkd files a job imported, from the PYTHONPROFILEIMPORTTIME lines of its log."""
    names = re.findall(r"^import time:.*\|\s+(hkd(?:\.\w+)*)\s*$", log.read_text(errors="replace"), re.M)
    files = set()
    for name in names:
        base = root.joinpath(*name.split("."))
        path = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        files.add(os.path.relpath(path, root))
    return files


def test_every_module_a_job_imported_is_declared(rule_code, study):
    seen = set()
    for (rule, method), (_, code, logs) in rule_code.items():
        unused = set(code)
        for log in logs:
            imported = _imported_at_run_time(log, study)
            assert imported, f"{log} lists no imports"
            assert imported <= code, f"{rule} {method} imported undeclared modules {sorted(imported - code)}"
            unused -= imported
            seen.add(rule)
        if logs:  # declared for imports on paths this study does not take
            print(f"{rule} {method or ''}: declared, not imported here: {' '.join(sorted(m[4:] for m in unused)) or '-'}")
    assert seen >= {"phantom", "train_teacher", "teacher_cache", "train_scratch", "train_student", "evaluate_student",
                    "tables",
                    "hypotheses", "figures", "context"}


@pytest.fixture(scope="module")
def rule_graph(study) -> dict[str, set[str]]:
    """Rule -> the rules that consume its outputs, from `snakemake --rulegraph`."""
    result = snakemake(study, "--rulegraph", "--forceall")
    assert result.returncode == 0, result.stderr[-3000:]
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', result.stdout, re.M))
    edges = defaultdict(set)
    for a, b in re.findall(r"^\s*(\d+) -> (\d+)", result.stdout, re.M):
        edges[names[a]].add(names[b])
    assert edges["train_teacher"] >= {"teacher_cache", "evaluate_teacher"}, dict(edges)
    return edges


def _downstream(rules: set[str], edges: dict[str, set[str]]) -> set[str]:
    found, todo = set(), list(rules)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in found and nxt != "all":
                found.add(nxt)
                todo.append(nxt)
    return found


def _groups() -> dict[frozenset[tuple[str, str | None]], list[str]]:
    """The modules grouped by the set of the study's jobs (rule, method) that run them."""
    config = merge(copy.deepcopy(default_config()), STUDY)
    imports = study_jobs(config["students"], config["teacher"]["cache"])
    groups = defaultdict(list)
    for module in MODULES:
        groups[frozenset(job for job, code in imports.items() if module in code)].append(module)
    return groups


GROUPS = _groups()


def _planned_jobs(out: str) -> list[tuple[str, str | None, str]]:
    """(rule, method, reason) of every job a dry-run output lists."""
    jobs = []
    for rule, block in _job_blocks(out):
        reason = re.search(r"^\s*reason: (.*)$", block, re.M)
        if reason:
            jobs.append((rule, _method(block), reason.group(1)))
    return jobs


@pytest.mark.parametrize("importers, modules", GROUPS.items(),
                         ids=[f"{m[0][4:]}+{len(m) - 1}" for m in GROUPS.values()])
def test_editing_modules_reruns_exactly_the_jobs_that_run_them(importers, modules, rule_graph, restore):
    """The modules of one group edited at once (every module is in one group): exactly the jobs that run
    them are planned for these files, every other planned job only because an upstream job reruns, and
    only in the rules downstream of theirs."""
    for module in modules:
        _edit(restore / module)
    jobs = _planned_jobs(dry_run(restore))
    planned = {(rule, method) for rule, method, _ in jobs}
    rules = {rule for rule, _ in importers}
    print(f"{len(modules)} module(s) {', '.join(m[4:] for m in modules)}: run by {sorted(importers, key=str)}; "
          f"planned {sorted(planned, key=str)}")
    assert importers <= planned  # no job that runs an edited file is missed
    assert {rule for rule, _ in planned} <= rules | _downstream(rules, rule_graph)
    for rule, method, reason in jobs:
        parts = dict(part.split(": ", 1) for part in reason.split("; "))
        if "Updated input files" in parts:  # planned because of the edit itself
            updated = set(parts["Updated input files"].split(", "))  # code inputs are relative paths
            assert (rule, method) in importers and updated == set(modules), (rule, method, reason)
        else:  # planned only because an upstream job reruns
            assert set(parts) == {"Input files updated by another job"}, (rule, method, reason)


# ------------------------------------------------------------------------------ the documented table

def test_the_documented_rerun_table_is_the_tested_one():
    text = (REPO / "docs" / "usage.md").read_text()
    section = text.split("## Reruns", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (.+?) \| (.+?) \|$", section, re.M)[1:])  # without the header
    assert rows == README_TABLE


def test_immediate_rerun_has_nothing_to_do(study):
    assert planned_jobs(study) == {}


def test_touching_inputs_without_changing_them_reruns_nothing(restore):
    for p in [*(restore / "hkd").rglob("*.py"), *(restore / "results" / "study" / "raw").rglob("*.gz")]:
        p.touch()
    assert planned_jobs(restore) == {}


def test_changing_one_methods_option_reruns_only_its_students(restore):
    _edit_config(restore, {"distill": {"latent": {"weight": 0.5}}})
    jobs = planned_jobs(restore)
    assert jobs["train_student"] == 1 and jobs["evaluate_student"] == 1  # the latent student only
    assert jobs["evaluate_student_external"] == 1  # and its evaluation on the external cohort
    assert jobs.get("teacher_cache", 0) <= 1  # the latent cache (its options reach it), no other
    assert "train_teacher" not in jobs and not DATA_JOBS & set(jobs)
    assert set(jobs) <= {"teacher_cache", "train_student", "evaluate_student", "evaluate_student_external", "tables",
                         "figures", "context", "hypotheses", "cost", "export_student"}


def test_changing_the_tracker_reruns_nothing(restore):
    _edit_config(restore, {"train": {"tracker": "mlflow" if _config(restore)["train"]["tracker"] != "mlflow"
                                     else "none"}})
    assert planned_jobs(restore) == {}


def test_changing_a_teacher_setting_reruns_teacher_and_distilled_students_only(restore):
    _edit_config(restore, {"teacher": {"train": {"lr": 0.001}}})
    jobs = planned_jobs(restore)
    cached = _config(restore)["teacher"]["cache"]
    methods = _config(restore)["students"]["methods"]
    assert jobs["train_teacher"] == 1 and jobs["teacher_cache"] == len(set(cached) & set(methods))
    assert jobs["train_student"] == len([m for m in methods if m != "scratch"])  # not scratch
    assert jobs["evaluate_student"] == jobs["train_student"]
    assert not DATA_JOBS & set(jobs)


def test_editing_a_figure_function_reruns_only_figures(restore):
    _edit(restore / "hkd" / "figures" / "curves.py")
    assert planned_jobs(restore) == {"figures": 1}


def test_editing_the_student_model_reruns_every_rule_that_imports_the_models(restore):
    _edit(restore / "hkd" / "models" / "squeezeunet.py")
    jobs = planned_jobs(restore)
    n_students = len(_config(restore)["students"]["methods"])
    assert jobs["train_teacher"] == 1 and jobs["evaluate_teacher"] == 1
    assert jobs["train_student"] + jobs["train_scratch"] == n_students
    assert jobs["evaluate_student"] + jobs["evaluate_scratch"] == n_students
    assert {"teacher_cache", "figures", "context"} <= set(jobs) and not DATA_JOBS & set(jobs)


def _all_jobs(root: Path) -> dict[str, int]:
    out = dry_run(root, "--forceall")
    table = out.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
            if m.group(1) not in ("total", "all")}


def test_editing_a_method_reruns_only_its_students_and_what_is_built_from_them(restore):
    _edit(restore / "hkd" / "distill" / "hlfd.py")
    # no cost job: it measures one checkpoint per width (an architecture's cost does not depend on its weights)
    assert planned_jobs(restore) == {"train_student": 1, "evaluate_student": 1, "evaluate_student_external": 1,
                                     "context": 1, "tables": 1, "hypotheses": 1, "figures": 1, "export_student": 1}


@pytest.mark.parametrize("reader", ["downloaders/synapse", "downloaders/kits19", "readers/kits19_lits",
                                    "readers/transunet"])
def test_editing_a_reader_the_study_does_not_use_reruns_nothing(restore, reader):
    _edit(restore / "hkd" / "data" / f"{reader}.py")
    assert planned_jobs(restore) == {}


def test_editing_the_reader_the_study_uses_reruns_its_data_steps_and_all_after(restore):
    """No false negative: the phantom's cases are read by hkd/data/readers/rawdata.py."""
    _edit(restore / "hkd" / "data" / "readers" / "rawdata.py")
    assert planned_jobs(restore) == {rule: n for rule, n in _all_jobs(restore).items()
                                     if rule not in ("phantom", "phantom_external")}


def test_editing_one_command_module_reruns_its_commands_only(restore):
    _edit(restore / "hkd" / "commands" / "evaluate.py")
    n = len(_config(restore)["students"]["methods"])
    assert planned_jobs(restore) == {"evaluate_teacher": 1, "evaluate_scratch": 1, "evaluate_student": n - 1,
                                     "evaluate_teacher_external": 1, "evaluate_scratch_external": 1,
                                     "evaluate_student_external": n - 1,
                                     "tables": 1, "hypotheses": 1, "figures": 1}  # cost measures the checkpoints


def test_editing_the_dispatcher_reruns_every_job(restore):
    _edit(restore / "hkd" / "cli.py")
    assert planned_jobs(restore) == _all_jobs(restore)


def test_a_copied_project_folder_plans_nothing(study, tmp_path):
    """Code inputs are relative paths: the same project in another folder is the same finished study."""
    moved = tmp_path / "moved"
    subprocess.run(["cp", "-a", str(study), str(moved)], check=True)
    assert planned_jobs(moved) == {}
