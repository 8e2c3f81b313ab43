"""The data jobs see every input: a new split file, and a changed or added scan in a folder source, rerun them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_case, write_nifti, write_rawdata
from patched_workflow import TINY_DATA, planned, ran, snakemake_patched


@pytest.mark.slow
def test_the_split_file_is_an_input(tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["0001"], "val": ["0002"], "test": ["0003"]}))
    patch = {"data": {**TINY_DATA, "split": {"preset": "file", "file": str(split)}}}
    target = str(tmp_path / "out" / "data" / "split.json")
    assert ran(snakemake_patched(tmp_path, patch, target))
    assert json.loads(Path(target).read_text())["val"] == ["0002"]
    assert planned(snakemake_patched(tmp_path, patch, target, "-n")) == set()
    time.sleep(1)
    split.write_text(json.dumps({"train": ["0002"], "val": ["0001"], "test": ["0003"]}))
    assert planned(snakemake_patched(tmp_path, patch, target, "-n")) == {"split"}


@pytest.mark.slow
def test_a_folder_source_reruns_prepare_when_a_file_changes_or_appears(tmp_path):
    raw = write_rawdata(tmp_path / "RawData", n=5, shape=(16, 16, 4))
    patch = {"data": {"source": "folder", "path": str(raw), "image_size": 16}}
    target = str(tmp_path / "out" / "data" / "prepared")
    assert ran(snakemake_patched(tmp_path, patch, target))
    assert planned(snakemake_patched(tmp_path, patch, target, "-n")) == set()
    time.sleep(1)
    label = raw / "Training" / "label" / "label0002.nii.gz"
    img = nib.load(label)
    fixed = np.asanyarray(img.dataobj).copy()
    assert fixed[0, 0, 0] == 0
    fixed[0, 0, 0] = 6
    nib.save(nib.Nifti1Image(fixed, img.affine), label)  # a label fixed in place
    assert {"split", "prepare"} <= planned(snakemake_patched(tmp_path, patch, target, "-n"))
    assert ran(snakemake_patched(tmp_path, patch, target))
    image, label = make_case((16, 16, 4), seed=6)
    write_nifti(raw / "Training" / "img" / "img0006.nii.gz", image)
    write_nifti(raw / "Training" / "label" / "label0006.nii.gz", label)  # a new case
    assert {"split", "prepare"} <= planned(snakemake_patched(tmp_path, patch, target, "-n"))
