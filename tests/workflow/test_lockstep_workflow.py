"""A lock-step study through Snakemake: one cohort job per seed, and reruns as fine as separate jobs.

A tiny study (scratch, logits and latent students of one seed) runs with ``students.lockstep: true``;
then one method's option, and a teacher setting, are changed in turn.
"""

from __future__ import annotations

import copy
import re
from collections import Counter

import pytest
import yaml

from helpers import STUDY, copy_tracked_files, merge, snakemake, study_config

pytestmark = pytest.mark.slow

LOCKSTEP = merge(copy.deepcopy(STUDY), {"teacher": {"cache": []}, "students": {"methods": ["scratch", "logits", "latent"],
                                                                "lockstep": True}})
# The runs stop at the students' evaluations (figures and verdicts are the shared study's business).
TARGETS = [f"results/lock/eval/students/{m}_w0.25_s0.csv" for m in ("scratch", "logits", "latent")]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = copy_tracked_files(tmp_path_factory.mktemp("lockstep"))
    config = study_config(LOCKSTEP, "results/lock")
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(root, "--cores", "2", *TARGETS)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return root, root / config["out"]


def _planned(root) -> Counter:
    """Rule -> job count of what a run would do now (the dry run's job table)."""
    out = snakemake(root, "-n", "--cores", "1", *TARGETS)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    if "Job stats:" not in text:
        return Counter()
    table = text.split("Job stats:", 1)[1]
    return Counter({m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
                    if m.group(1) not in ("total", "all")})


def _edit_config(root, patch: dict) -> None:
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), patch)))


def _students(out) -> dict[str, bytes]:
    return {p.parent.parent.parent.name: p.read_bytes()
            for p in (out / "models" / "students").glob("*/w*/s*/best.pt")}


def _trained(log: str) -> set[str]:
    """The members a cohort job's log says it trained."""
    listed = re.search(r"cohort \S+: trained \[(.*?)\]", log)
    assert listed, log
    return set(re.findall(r"'([^']+)'", listed.group(1)))


def test_one_cohort_job_per_seed_trains_every_student(study):
    root, out = study
    log = (out / "logs" / "train_cohort" / "s0.log").read_text()
    assert _trained(log) == {"scratch_w0.25", "logits_w0.25", "latent_w0.25"}, log
    passes, reads = map(int, re.search(r"(\d+) teacher passes for (\d+)", log).groups())
    assert reads == 2 * passes  # two distilled students, one teacher pass per batch
    assert set(_students(out)) == {"scratch", "logits", "latent"}
    assert _planned(root) == Counter()


def test_one_methods_option_retrains_only_its_students(study):
    """The seed's cohort job reruns; it retrains the latent student only and copies the others out again,
    bit for bit (their evaluations rerun)."""
    root, out = study
    before = _students(out)
    _edit_config(root, {"distill": {"latent": {"weight": 0.5}}})
    planned = _planned(root)
    assert planned["train_cohort"] == 1 and not {"train_teacher", "phantom", "split", "prepare"} & set(planned)
    run = snakemake(root, "--cores", "2", *TARGETS)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _trained((out / "logs" / "train_cohort" / "s0.log").read_text()) == {"latent_w0.25"}
    after = _students(out)
    assert after["scratch"] == before["scratch"] and after["logits"] == before["logits"]
    assert after["latent"] != before["latent"]
    assert _planned(root) == Counter()


def test_a_teacher_setting_retrains_the_distilled_students_not_scratch(study):
    root, out = study
    before = _students(out)
    _edit_config(root, {"teacher": {"train": {"lr": 0.001}}})
    planned = _planned(root)
    assert planned["train_teacher"] == 1 and planned["train_cohort"] == 1
    run = snakemake(root, "--cores", "2", *TARGETS)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _trained((out / "logs" / "train_cohort" / "s0.log").read_text()) == {"logits_w0.25", "latent_w0.25"}
    assert _students(out)["scratch"] == before["scratch"]
