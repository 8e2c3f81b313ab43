"""benchmarks/replicate.py: a second seed set on the first study's data and teacher, verdicts side by side."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys

import pandas as pd
import pytest

from helpers import REPO, snakemake


def load_replicate(root=REPO):
    """benchmarks/replicate.py of the checkout in ``root`` (a script, not a package module)."""
    name = f"replicate_{abs(hash(str(root)))}"
    spec = importlib.util.spec_from_file_location(name, root / "benchmarks" / "replicate.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


replicate = load_replicate()


def _verdicts(path, rows):
    cols = ["claim", "preset", "multiplier", "mean_diff", "ci_low", "ci_high", "p_value", "p_holm", "verdict"]
    pd.DataFrame(rows, columns=cols).to_csv(path, index=False)
    return path


def test_side_by_side_pairs_each_claim_and_width(tmp_path):
    a = _verdicts(tmp_path / "a.csv", [
        ("H1: logits beats scratch", "0.4M", 1.0, 0.12, 0.05, 0.2, 0.0004, 0.0048, "supported"),
        ("H1: logits beats scratch", "", 1.5, 0.01, -0.03, 0.05, 0.3, 1.0, "inconclusive"),
        ("H2: latent beats scratch", "0.4M", 1.0, -0.1, -0.2, -0.01, 0.99, 1.0, "not supported")])
    b = _verdicts(tmp_path / "b.csv", [
        ("H2: latent beats scratch", "0.4M", 1.0, -0.02, -0.08, 0.03, 0.8, 1.0, "inconclusive"),
        ("H1: logits beats scratch", "", 1.5, 0.02, -0.01, 0.06, 0.2, 0.8, "inconclusive"),
        ("H1: logits beats scratch", "0.4M", 1.0, 0.1, 0.04, 0.17, 0.002, 0.012, "supported")])
    text = replicate.side_by_side(a, b, labels=("A", "B"))
    lines = text.splitlines()
    assert "| claim" in lines[0] and "verdict A" in lines[0] and "p_holm B" in lines[0] and "margin B" in lines[0]
    rows = {(cells[0], cells[1]): cells for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:5])}
    # margins (tables written before hkd hypotheses wrote them: computed from verdict and CI), in half-widths:
    # supported 0.05 / 0.075 and 0.04 / 0.065
    assert rows[("H1: logits beats scratch", "0.4M")][2:] == ["0.120", "[0.050, 0.200]", "<0.001", "0.005",
                                                              "supported", "0.67", "0.100", "[0.040, 0.170]",
                                                              "0.002", "0.012", "supported", "0.62"]
    # inconclusive: the nearer end, 0.03 / 0.04 and 0.01 / 0.035
    assert rows[("H1: logits beats scratch", "x1.5")][6::6] == ["inconclusive", "inconclusive"]
    assert rows[("H1: logits beats scratch", "x1.5")][7::6] == ["0.75", "0.29 fragile"]
    # not supported 0.01 / 0.095, then inconclusive 0.03 / 0.055: the verdict that changed was fragile
    assert rows[("H2: latent beats scratch", "0.4M")][6:] == ["not supported", "0.11 fragile", "-0.020",
                                                              "[-0.080, 0.030]", "0.800", "1.000", "inconclusive",
                                                              "0.55"]
    assert lines[-1] == ("verdicts agree on 2 of 3 claims; 1 of the 1 that differ had a fragile verdict (margin "
                         "below 0.5 CI half-widths) in either table")


def test_side_by_side_takes_the_margins_hkd_hypotheses_wrote(tmp_path):
    rows = [("H1: logits beats scratch", "0.4M", 1.0, 0.12, 0.05, 0.2, 0.0004, 0.0048, "supported")]
    a, b = _verdicts(tmp_path / "a.csv", rows), _verdicts(tmp_path / "b.csv", rows)
    written = pd.read_csv(b).assign(margin=0.3, fragile=True)  # as written, even where it differs from the CI
    written.to_csv(b, index=False)
    cells = [c.strip() for c in replicate.side_by_side(a, b).splitlines()[2].strip("|").split("|")]
    assert cells[7] == "0.67" and cells[13] == "0.30 fragile"


def test_seed_sets_are_disjoint():
    assert replicate.disjoint_seeds([0, 1, 2]) == [3, 4, 5]
    assert replicate.disjoint_seeds([0, 1, 2], [7, 8]) == [7, 8]
    with pytest.raises(SystemExit, match=r"seeds \[2\] are already the first study's"):
        replicate.disjoint_seeds([0, 1, 2], [2, 3, 4])


@pytest.mark.slow
def test_the_second_study_plans_no_data_or_teacher_job(default_study, tmp_path):
    """B (the next seed) beside the shared finished study A, then B's dry run: B trains and evaluates its
    students and the verdicts, nothing upstream; without A's teacher it would train one."""
    root, config = default_study.root, default_study.config
    rep = load_replicate(root).prepare(root)
    try:
        _check_second_study(root, config, rep, tmp_path)
    finally:  # the shared study as it was
        shutil.rmtree(rep.second)


def _check_second_study(root, config, rep, tmp_path):
    assert rep.seeds == ([0], [1]) and rep.second == root / "results" / "study-replicate"
    assert rep.linked == list(replicate.UPSTREAM)
    assert os.path.samefile(rep.first / "models/teacher/best.pt", rep.second / "models/teacher/best.pt")
    distilled = len(config["students"]["methods"]) - 1

    dry = snakemake(root, "-n", "--cores", "1", *rep.args)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert replicate.planned_jobs(dry.stdout) == {
        "train_scratch": 1, "evaluate_scratch": 1, "train_student": distilled, "evaluate_student": distilled,
        "evaluate_scratch_external": 1, "evaluate_student_external": distilled,
        "context": 1, "hypotheses": 1}, dry.stdout[-3000:]
    assert "s1" in dry.stdout and "/s0/" not in dry.stdout

    again = load_replicate(root).prepare(root)  # B exists: it is reused as it is
    assert again.linked == [] and again.args == rep.args

    bare = load_replicate(root).prepare(root, seeds=[4], out=tmp_path / "bare")
    for name in replicate.UPSTREAM[2:]:  # keep A's data, drop its teacher: B would train its own
        path = bare.second / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    planned = replicate.planned_jobs(snakemake(root, "-n", "--cores", "1", *bare.args).stdout)
    assert {"train_teacher", "teacher_cache", "evaluate_teacher"} <= set(planned)
    assert not {"phantom", "split", "prepare"} & set(planned)
