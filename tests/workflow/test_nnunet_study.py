"""A study on an nnU-Net raw dataset: the phantom writes the layout, the nnU-Net reader reads it, the label map
comes from its dataset.json, and the study runs end to end; a user's folder (data.source nnunet) plans so."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml

from helpers import TINY_TEACHER, copy_tracked_files, snakemake, study_config

pytestmark = pytest.mark.slow

TINY = {
    "data": {"source": "phantom", "path": None, "phantom": {"cases": 6, "size": 64, "slices": [6, 8],
                                                            "layout": "nnunet"},
             "image_size": 32, "external": {"source": "none"}},  # the external cohort: the shared study's
    "deploy": {"export": False},
    "train": {"epochs": 1, "batch_size": 8, "threads": 1},
    "teacher": {"model": TINY_TEACHER, "train": {"epochs": 2}},
    "students": {"widths": ["0.25"], "seeds": [0], "methods": ["scratch", "logits"]},
    "report": {"n_slices": 1, "context_slices": 4},
}


@pytest.mark.budget(300)
def test_a_study_on_an_nnunet_dataset_runs_end_to_end(tmp_path):
    root = copy_tracked_files(tmp_path / "repo")
    config = study_config(TINY, "results/nnunet")
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    out = root / config["out"]
    run = snakemake(root, "--cores", "2", timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    raw = out / "raw" / "phantom"
    assert json.loads((raw / "dataset.json").read_text())["channel_names"] == {"0": "CT"}
    assert len(list(raw.glob("imagesTr/hkd_*_0000.nii.gz"))) == 6
    split = json.loads((out / "data" / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == [f"hkd_{i:04d}" for i in range(6)]
    meta = json.loads((out / "data" / "prepared" / "dataset.json").read_text())
    assert meta["label_map"] == {str(k): v for k, v in config["data"]["label_map"].items()}  # from the names
    organs = pd.read_csv(out / "tables" / "organs.csv")
    assert set(organs["method"]) == {"teacher", *config["students"]["methods"]}
    assert organs["dice_mean"].between(0, 1).all()


def test_a_users_nnunet_folder_plans_with_the_nnunet_reader(tmp_path):
    from hkd.data.phantom import write_phantom_dataset

    root = copy_tracked_files(tmp_path / "repo")
    dataset = tmp_path / "nnUNet_raw" / "Dataset501_Phantom"
    write_phantom_dataset(dataset, 6, seed=0, size=64, slices=(6, 8), layout="nnunet")
    config = study_config({**TINY, "data": {**TINY["data"], "source": "nnunet", "path": str(dataset.parent)}},
                          "results/mine")
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    plan = snakemake(root, "-n", "-p", "--cores", "2")
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    assert re.search(r"hkd prepare --source \S*nnUNet_raw --format nnunet", plan.stdout)
    assert "hkd download" not in plan.stdout
