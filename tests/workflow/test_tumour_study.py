"""Tiny versions of HLFD's KiTS19 and LiTS studies: the tumour phantom in the dataset's layout, read by its
reader, with the config's window, scaling and task; KiTS19's end to end (teacher, every method's student,
tumour metrics, tables, verdicts, figures and the report), LiTS's data steps and its plan."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml

from helpers import REPO, copy_tracked_files, snakemake, study_config, tumour_study

pytestmark = pytest.mark.slow

STUDIES = {  # dataset -> (its HU window, case ids of 6 generated cases, the raw files one per case)
    "kits19": ([-200, 300], [f"{i:05d}" for i in range(6)], "case_*/imaging.nii.gz"),
    "lits": ([-40, 160], [f"{i:03d}" for i in range(6)], "volume-*.nii"),
}


def _write_study(dataset: str, tmp_path):
    root = copy_tracked_files(tmp_path / "repo")
    config = study_config(tumour_study(dataset), "results/tumour", config_file(dataset))
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root, root / config["out"]


def config_file(dataset: str):
    return REPO / "workflow" / "configs" / f"hlfd-{dataset}.yaml"


def _check_data_steps(dataset: str, out) -> None:
    """The phantom in the dataset's layout, read by its reader with the config's window, scaling and task."""
    window, case_ids, raw_files = STUDIES[dataset]
    meta = json.loads((out / "data" / "prepared" / "dataset.json").read_text())
    assert meta["classes"] == ["background", "tumour"] and meta["task"] == "tumour"
    assert meta["scale"] == [-1, 1] and meta["hu_window"] == window
    split = json.loads((out / "data" / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == case_ids  # the dataset's case ids
    assert len(list((out / "raw" / "phantom").glob(raw_files))) == 6  # generated in the dataset's layout
    assert (out / "tables" / "data.csv").stat().st_size > 0


def test_tiny_lits_study_reads_its_layout_and_plans_every_method(tmp_path):
    """LiTS's own steps (its layout, reader, window and scaling) run; what follows them is the tumour task's
    code, which the KiTS19 study below runs end to end, so here it is planned: every method of the config."""
    root, out = _write_study("lits", tmp_path)
    run = snakemake(root, "--cores", "2", str((out / "tables" / "data.csv").relative_to(root)), timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    _check_data_steps("lits", out)
    plan = snakemake(root, "-n", "--cores", "2")
    assert plan.returncode == 0, plan.stdout[-3000:]
    methods = yaml.safe_load(config_file("lits").read_text())["students"]["methods"]
    trained = set(re.findall(r"models/students/(\w+)/w0\.25/s0/best\.pt", plan.stdout))
    assert trained == set(methods) and "rule hypotheses:" in plan.stdout


def test_tiny_kits19_hlfd_study_reports_tumour_dice_voe_and_rvd_per_method(tmp_path):
    root, out = _write_study("kits19", tmp_path)
    run = snakemake(root, "--cores", "2", timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    _check_data_steps("kits19", out)

    methods = yaml.safe_load(config_file("kits19").read_text())["students"]["methods"]
    organs = pd.read_csv(out / "tables" / "organs.csv")
    assert set(organs["organ"]) == {"tumour"}
    assert set(organs["method"]) == {"teacher", *methods}
    for column in ("dice_mean", "voe_mean", "rvd_mean", "hd95_mm_mean"):
        assert column in organs
    assert organs["dice_mean"].between(0, 1).all() and organs["voe_mean"].between(0, 1).all()
    assert (organs["rvd_mean"] >= -1).all()
    print("\n" + organs[["method", "dice_mean", "voe_mean", "rvd_mean", "hd95_mm_mean", "empty_pred"]]
          .to_string(index=False))

    verdicts = pd.read_csv(out / "hypotheses.csv")
    assert set(verdicts.loc[verdicts["quantity"].str.startswith("test Dice"), "method"]) == set(methods) - {"scratch"}
    report = snakemake(root, "--report", str(tmp_path / "report.html"), timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report.html").stat().st_size > 100_000
