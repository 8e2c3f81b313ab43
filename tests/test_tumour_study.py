"""Tiny versions of HLFD's KiTS19 and LiTS studies end to end: the tumour phantom in the dataset's layout,
read by its reader, the config's window, scaling, task, teacher, students and methods, tumour metrics,
tables, verdicts, figures and (LiTS) the report."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from helpers import REPO, copy_tracked_files, snakemake, study_config, tumour_study

pytestmark = pytest.mark.slow

STUDIES = {  # dataset -> (its HU window, case ids of 6 generated cases, the raw files one per case)
    "kits19": ([-200, 300], [f"{i:05d}" for i in range(6)], "case_*/imaging.nii.gz"),
    "lits": ([-40, 160], [f"{i:03d}" for i in range(6)], "volume-*.nii"),
}


@pytest.mark.parametrize("dataset", sorted(STUDIES))
def test_tiny_hlfd_study_reports_tumour_dice_voe_and_rvd_per_method(dataset, tmp_path):
    window, case_ids, raw_files = STUDIES[dataset]
    config_file = REPO / "workflow" / "configs" / f"hlfd-{dataset}.yaml"
    root = copy_tracked_files(tmp_path / "repo")
    config = study_config(tumour_study(dataset), "results/tumour", config_file)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(root, "--cores", "2", timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    out = root / config["out"]

    meta = json.loads((out / "data" / "prepared" / "dataset.json").read_text())
    assert meta["classes"] == ["background", "tumour"] and meta["task"] == "tumour"
    assert meta["scale"] == [-1, 1] and meta["hu_window"] == window
    split = json.loads((out / "data" / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == case_ids  # the dataset's case ids
    assert len(list((out / "raw" / "phantom").glob(raw_files))) == 6  # generated in the dataset's layout

    methods = yaml.safe_load(config_file.read_text())["students"]["methods"]
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
    if dataset != "lits":  # one report build is enough for the suite's time
        return
    report = snakemake(root, "--report", str(tmp_path / "report.html"), timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report.html").stat().st_size > 100_000
