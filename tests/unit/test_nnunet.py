"""hkd.data.readers.nnunet: the nnU-Net raw dataset format (data.source nnunet), written by the phantom."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from helpers import REPO
from hkd.data.phantom import write_phantom_dataset
from hkd.data.readers import iter_cases, list_cases
from hkd.data.readers.nnunet import label_map, read_description
from hkd.errors import DataError

CLASSES = ["background", "spleen", "right_kidney", "left_kidney", "gallbladder", "liver", "stomach", "aorta",
           "pancreas"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("Dataset501_Phantom")
    write_phantom_dataset(root, 3, seed=0, size=64, slices=(4, 5), layout="nnunet")
    return root


def test_the_phantom_in_nnunet_layout_is_read_back_as_the_synapse_one(dataset, tmp_path):
    """Same cases, the nnU-Net file names: the same voxels and labels, and dataset.json's names give the
    label map the default config writes by hand for the BTCV ids."""
    assert list_cases(dataset, "nnunet") == {"hkd_0000": 5, "hkd_0001": 5, "hkd_0002": 5}
    synapse = tmp_path / "synapse"
    write_phantom_dataset(synapse, 3, seed=0, size=64, slices=(4, 5), layout="synapse")
    for mine, theirs in zip(iter_cases(dataset, "nnunet", ["hkd_0001"]), iter_cases(synapse, "rawdata", ["0002"])):
        assert mine.case_id == "hkd_0001"
        np.testing.assert_array_equal(mine.image, theirs.image)
        np.testing.assert_array_equal(mine.label, theirs.label)
    default = yaml.safe_load((REPO / "config.yaml").read_text())["data"]
    assert label_map(dataset, CLASSES) == {int(k): v for k, v in default["label_map"].items()}


def test_data_path_may_be_the_folder_holding_the_dataset(dataset, tmp_path):
    import shutil

    shutil.copytree(dataset, tmp_path / "nnUNet_raw" / "Dataset501_Phantom")
    assert list_cases(tmp_path / "nnUNet_raw", "nnunet") == list_cases(dataset, "nnunet")
    shutil.copytree(dataset, tmp_path / "nnUNet_raw" / "Dataset502_Other")
    with pytest.raises(DataError, match="nnUNet_raw: 2 dataset folders"):
        list_cases(tmp_path / "nnUNet_raw", "nnunet")


def _edited(dataset, tmp_path, **changes):
    import shutil

    copy = tmp_path / "Dataset502_Edited"
    shutil.copytree(dataset, copy)
    meta = json.loads((copy / "dataset.json").read_text())
    meta.update(changes)
    (copy / "dataset.json").write_text(json.dumps(meta))
    return copy


@pytest.mark.parametrize("changes, words", [
    ({"channel_names": {"0": "CT", "1": "PET"}},
     "channel_names {'0': 'CT', '1': 'PET'}; hkd segments CT with one channel"),
    ({"channel_names": {"0": "T2"}}, "hkd segments CT with one channel"),
    ({"file_ending": ".mha"}, "file_ending '.mha'; hkd reads NIfTI (.nii.gz, .nii)"),
    ({"labels": {"background": 0, "liver": [1, 2]}}, "region-based labels"),
])
def test_a_dataset_hkd_cannot_read_is_refused_naming_its_description(dataset, tmp_path, changes, words):
    copy = _edited(dataset, tmp_path, **changes)
    with pytest.raises(DataError, match="dataset.json: ") as err:
        read_description(copy)
    assert words in str(err.value)


def test_a_class_the_dataset_does_not_name_is_refused(dataset, tmp_path):
    copy = _edited(dataset, tmp_path, labels={"background": 0, "liver": 6})
    with pytest.raises(DataError, match=r"dataset.json: no label named spleen, right_kidney.*: background, liver"):
        label_map(copy, CLASSES)
    assert label_map(copy, ["background", "liver"]) == {0: 0, 6: 1}


def test_a_label_without_its_image_is_named(dataset, tmp_path):
    copy = _edited(dataset, tmp_path)
    (copy / "imagesTr" / "hkd_0002_0000.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labelsTr/hkd_0002.nii.gz: no matching image .*imagesTr/hkd_0002_0000.nii.gz"):
        list_cases(copy, "nnunet")
