"""Preprocessing, the prepared dataset format, patient-level splits and the TransUNet import."""

from __future__ import annotations

import json

import h5py
import nibabel as nib
import numpy as np
import pytest

from hkd.data.dataset import load_slices, load_volume, read_meta
from hkd.data.preprocess import label_lookup, map_labels, pad_to_square, prepare_dataset, resize_slices, window
from hkd.data.readers import iter_cases, list_cases
from hkd.data.readers.rawdata import find_raw_cases
from hkd.data.split import TRANSUNET_TEST, TRANSUNET_TRAIN, make_split
from hkd.errors import DataError

from conftest import CLASSES, LABEL_MAP, REAL_CT, write_nifti


def test_window_clips_and_scales():
    out = window(np.array([-1000, -125, 75, 275, 2000], np.float32), -125, 275)
    np.testing.assert_allclose(out, [0, 0, 0.5, 1, 1])
    with pytest.raises(DataError, match="data.hu_window"):
        window(np.zeros(3), 10, 10)


def test_label_map_rejects_unmapped_values():
    table = label_lookup({0: 0, 6: 5})
    np.testing.assert_array_equal(map_labels(np.array([0, 6, 6], np.uint8), table, "x"), [0, 5, 5])
    with pytest.raises(DataError, match=r"label7.nii.gz: label values \[3\] are not in the configured label map"):
        map_labels(np.array([0, 3], np.uint8), table, "label7.nii.gz")


def test_non_square_slices_keep_their_aspect_ratio():
    stack = np.zeros((1, 20, 40), np.uint8)
    stack[0, 5:15, 15:25] = 1  # a 10x10 square
    out = resize_slices(pad_to_square(stack, 0), 32, "label")
    rows, cols = np.nonzero(out[0])
    assert out.shape == (1, 32, 32)
    assert abs((rows.max() - rows.min()) - (cols.max() - cols.min())) <= 1  # still a square


def test_resize_image_is_smooth_and_label_is_nearest():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 9, (2, 64, 64)).astype(np.uint8)
    out = resize_slices(labels, 32, "label")
    assert out.dtype == np.uint8 and set(np.unique(out)) <= set(range(9))
    img = resize_slices(rng.random((2, 64, 64), dtype=np.float32), 32, "image")
    assert img.shape == (2, 32, 32) and 0 <= img.min() and img.max() <= 1


def test_random_split_is_patient_level_seeded_and_complete():
    ids = [f"{i:04d}" for i in range(1, 31)]
    split = make_split(ids, "random", (0.6, 0.2, 0.2), seed=3)
    assert [len(split[p]) for p in ("train", "val", "test")] == [18, 6, 6]
    assert sorted(sum(split.values(), [])) == ids  # every case once
    assert split == make_split(ids, "random", (0.6, 0.2, 0.2), seed=3)
    assert split != make_split(ids, "random", (0.6, 0.2, 0.2), seed=4)
    with pytest.raises(DataError, match="data.split.ratios"):
        make_split(ids, "random", (0.6, 0.3, 0.2))


def test_transunet_split_uses_the_official_training_cases():
    ids = sorted(TRANSUNET_TRAIN + TRANSUNET_TEST)
    split = make_split(ids, "transunet", seed=0)
    assert split["train"] == TRANSUNET_TRAIN
    assert sorted(split["val"] + split["test"]) == sorted(TRANSUNET_TEST)
    assert len(split["val"]) == len(split["test"]) == 6
    with pytest.raises(DataError, match="needs Synapse cases"):
        make_split(ids[:-1], "transunet")


def test_split_file_checks_overlap_and_unknown_cases(tmp_path):
    ids = ["0001", "0002", "0003"]
    f = tmp_path / "split.json"
    f.write_text(json.dumps({"train": ["0001", "0002"], "val": ["0002"], "test": ["0003"]}))
    with pytest.raises(DataError, match="case 0002 is in both 'train' and 'val'"):
        make_split(ids, "file", file=str(f))
    f.write_text(json.dumps({"train": ["0001"], "val": ["0009"], "test": []}))
    with pytest.raises(DataError, match=r"cases \['0009'\] are not in the source data"):
        make_split(ids, "file", file=str(f))


def _prepare(rawdata, out, split=None, size=32):
    split = split or {"train": ["0001", "0002", "0003"], "val": ["0004"], "test": ["0005"]}
    cases = iter_cases(rawdata, "rawdata", sum(split.values(), []))
    return prepare_dataset(cases, split, out, image_size=size, hu_window=(-125, 275), label_map=LABEL_MAP,
                           classes=CLASSES, progress=False)


def test_prepared_dataset_format(rawdata, tmp_path):
    meta = _prepare(rawdata, tmp_path / "prep")
    assert meta["slices"] == {"train": 24, "val": 8, "test": 8}
    assert read_meta(tmp_path / "prep") == meta
    with h5py.File(tmp_path / "prep" / "train.h5") as f:
        assert f["image"].chunks == (1, 32, 32) and f["image"].compression == "gzip"
        assert f["image"].shape == (24, 32, 32) and f["label"].dtype == np.uint8
        assert [c.decode() for c in f["case"][:9]] == ["0001"] * 8 + ["0002"]
        assert list(f["slice"][:8]) == list(range(8))
    train = load_slices(tmp_path / "prep", "train")
    assert train.image.shape == (24, 1, 32, 32) and set(train.label.unique().tolist()) == {0, 5}
    # the liver (BTCV 6 -> class 5) is bright: scaled (100 + 125) / 400 inside it
    assert train.image[:, 0][train.label == 5].mean() == pytest.approx(225 / 400, abs=0.02)
    image, label, spacing = load_volume(tmp_path / "prep", "0005")
    assert image.shape == (8, 32, 32) and spacing == pytest.approx((3.0, 0.8, 0.8))
    assert not (tmp_path / "prep" / "volumes" / "0001.h5").exists()  # training cases: slices only


def test_failed_prepare_leaves_nothing_behind(rawdata, tmp_path):
    bad = np.zeros((32, 32, 8), np.uint8)
    bad[0, 0, 0] = 42
    write_nifti(rawdata / "Training" / "label" / "label0003.nii.gz", bad)
    with pytest.raises(DataError, match=r"label0003.nii.gz: label values \[42\]"):
        _prepare(rawdata, tmp_path / "prep")
    assert list(tmp_path.glob("prep*")) == [] and list(tmp_path.glob(".prep*")) == []


def test_split_naming_missing_cases_fails(rawdata, tmp_path):
    with pytest.raises(DataError, match="no source data"):
        _prepare(rawdata, tmp_path / "prep", {"train": ["0001", "0099"], "val": ["0002"], "test": []})


def _write_transunet(root, liver_id=5, n_train=2, n_test=1):
    rng = np.random.default_rng(0)
    (root / "train_npz").mkdir(parents=True)
    (root / "test_vol_h5").mkdir()
    for c in range(1, n_train + 1):
        for s in range(3):
            label = np.zeros((16, 16), np.uint8)
            label[2:12, 2:12] = liver_id  # largest organ
            label[13:15, 13:15] = 1
            np.savez(root / "train_npz" / f"case{c:04d}_slice{s:03d}.npz",
                     image=rng.random((16, 16), dtype=np.float32), label=label)
    for c in range(10, 10 + n_test):
        label = np.zeros((4, 16, 16), np.uint8)
        label[:, 2:12, 2:12] = liver_id
        with h5py.File(root / "test_vol_h5" / f"case{c:04d}.npy.h5", "w") as f:
            f["image"] = rng.random((4, 16, 16), dtype=np.float32)
            f["label"] = label
    return root


TRANSUNET_MAP = {i: i for i in range(9)}


def test_transunet_import_goes_through_the_same_prepare(tmp_path):
    root = _write_transunet(tmp_path / "tu")
    assert list_cases(root, "transunet") == {"0001": 3, "0002": 3, "0010": 4}
    split = {"train": ["0001"], "val": ["0002"], "test": ["0010"]}
    meta = prepare_dataset(iter_cases(root, "transunet", sum(split.values(), []), liver_id=5), split,
                           tmp_path / "prep", image_size=16, hu_window=(-125, 275), label_map=TRANSUNET_MAP,
                           classes=CLASSES, progress=False)
    assert meta["slices"] == {"train": 3, "val": 3, "test": 4}
    image, _, _ = load_volume(tmp_path / "prep", "0010")
    with h5py.File(root / "test_vol_h5" / "case0010.npy.h5") as f:
        np.testing.assert_allclose(image, f["image"][()])  # already scaled: not windowed again


def test_transunet_import_checks_the_label_order(tmp_path):
    root = _write_transunet(tmp_path / "tu", liver_id=6)
    split = {"train": ["0001"], "val": ["0002"], "test": []}
    with pytest.raises(DataError, match="label order check failed: the largest organ is id 6"):
        prepare_dataset(iter_cases(root, "transunet", ["0001", "0002"], liver_id=5), split, tmp_path / "prep",
                        image_size=16, hu_window=(-125, 275), label_map=TRANSUNET_MAP, classes=CLASSES,
                        progress=False)
    assert not (tmp_path / "prep").exists()


@pytest.mark.skipif(not REAL_CT.exists(), reason=f"real CT folder {REAL_CT} is absent")
def test_real_ct_prepared_liver_intensity_matches_windowed_hu(tmp_path):
    split = {"train": [], "val": ["0001"], "test": []}
    meta = prepare_dataset(iter_cases(REAL_CT, "rawdata", ["0001"]), split, tmp_path / "prep", image_size=224,
                           hu_window=(-125, 275), label_map=LABEL_MAP, classes=CLASSES, progress=False)
    assert meta["slices"]["val"] == 20
    (raw,) = find_raw_cases(REAL_CT)
    hu = np.asanyarray(nib.load(raw.image_path).dataobj).astype(np.float64)
    lab = np.asanyarray(nib.load(raw.label_path).dataobj)
    expected = np.clip(hu[lab == 6], -125, 275).mean()
    val = load_slices(tmp_path / "prep", "val")
    liver = val.image[:, 0][val.label == 5].double().mean().item()
    assert liver * 400 - 125 == pytest.approx(expected, abs=3.0)  # resized slices: within 3 HU
    image, label, _ = load_volume(tmp_path / "prep", "0001")
    assert image[label == 5].mean() * 400 - 125 == pytest.approx(expected, abs=0.01)  # native grid: exact


def test_data_summary_counts_what_the_prepared_files_hold(prepared, tmp_path):
    from hkd.cli import main
    from hkd.data.summary import data_summary

    summary = data_summary(prepared)
    meta = read_meta(prepared)
    for part, rows in summary.groupby("split"):
        assert set(rows["cases"]) == {len(meta["split"][part])} and set(rows["slices"]) == {meta["slices"][part]}
        assert rows["pixel_percent"].sum() == pytest.approx(100.0)
        assert list(rows["class"]) == meta["classes"]
    train = load_slices(prepared, "train")
    liver = CLASSES.index("liver")
    row = summary[(summary["split"] == "train") & (summary["class"] == "liver")].iloc[0]
    assert row["pixel_percent"] == pytest.approx(100.0 * (train.label == liver).float().mean().item())
    holding = {c for c in set(train.case) if (train.label[[i for i, k in enumerate(train.case) if k == c]] == liver).any()}
    assert row["cases_with_class"] == len(holding)
    _, label, _ = load_volume(prepared, meta["split"]["test"][0])
    row = summary[(summary["split"] == "test") & (summary["class"] == "background")].iloc[0]
    assert row["pixel_percent"] == pytest.approx(100.0 * (label == 0).mean())

    assert main(["describe-data", "--data", str(prepared), "--out", str(tmp_path / "d.csv"),
                 "--out-html", str(tmp_path / "d.html")]) == 0
    assert "<table" in (tmp_path / "d.html").read_text() and len((tmp_path / "d.csv").read_text().splitlines()) == 28


def write_real_ct_as_lits(root):
    """A LiTS-layout copy of the real CT (volume-0.nii, segmentation-0.nii: 1 liver), in RAS voxel order
    (the shared files are LPS), written from the shared files."""
    (raw,) = find_raw_cases(REAL_CT)
    image, label = nib.load(raw.image_path), nib.load(raw.label_path)
    liver = (np.asanyarray(label.dataobj) == 6).astype(np.uint8)
    root.mkdir(parents=True)
    nib.save(nib.as_closest_canonical(image), root / "volume-0.nii")
    nib.save(nib.as_closest_canonical(nib.Nifti1Image(liver, label.affine)), root / "segmentation-0.nii")
    assert nib.aff2axcodes(nib.load(root / "volume-0.nii").affine) == ("R", "A", "S")
    return raw


@pytest.mark.skipif(not REAL_CT.exists(), reason=f"real CT folder {REAL_CT} is absent")
def test_real_ct_through_the_lits_path_keeps_the_liver_side_and_the_windowed_hu(tmp_path):
    raw = write_real_ct_as_lits(tmp_path / "LiTS")
    (lits,) = iter_cases(tmp_path / "LiTS", "lits", ["000"])
    (synapse,) = iter_cases(REAL_CT, "rawdata", ["0001"])
    np.testing.assert_array_equal(lits.label == 1, synapse.label == 6)  # same voxels, same side of the image
    assert np.nonzero(lits.label == 1)[2].mean() < 256  # radiological view: the liver on the image's left
    meta = prepare_dataset(iter_cases(tmp_path / "LiTS", "lits", ["000"]), {"train": [], "val": [], "test": ["000"]},
                           tmp_path / "prep", image_size=224, hu_window=(-40, 160), scale=(-1, 1),
                           task="organ+tumour", label_map={0: 0, 1: 1, 2: 2}, classes=["background", "liver", "tumour"],
                           progress=False)
    assert meta["scale"] == [-1.0, 1.0] and meta["slices"]["test"] == 20
    hu = np.asanyarray(nib.load(raw.image_path).dataobj).astype(np.float64)
    lab = np.asanyarray(nib.load(raw.label_path).dataobj)
    expected = (np.clip(hu[lab == 6], -40, 160) + 40).mean() / 200 * 2 - 1
    image, label, spacing = load_volume(tmp_path / "prep", "000")
    assert spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    prepared = image[label == 1].astype(np.float64).mean()
    print(f"\nreal CT liver through LiTS, window [-40, 160] scaled to [-1, 1]: prepared {prepared:.5f}, "
          f"expected from raw HU {expected:.5f}")
    assert prepared == pytest.approx(expected, abs=1e-4)
    assert image.min() >= -1 and image.max() <= 1 and image.min() == -1


def test_window_scaled_to_minus_one_one():
    hu = np.array([-300.0, -200.0, 50.0, 300.0, 900.0])
    np.testing.assert_allclose(window(hu.copy(), -200, 300, (-1, 1)), [-1, -1, 0, 1, 1])
    np.testing.assert_allclose(window(hu.copy(), -200, 300), [0, 0, 0.5, 1, 1])


def test_tumour_task_trains_on_tumour_slices_only_and_evaluates_whole_volumes(rawdata, tmp_path):
    tumour_slices = {"0001": [2, 3], "0002": [5], "0003": [], "0004": [1], "0005": [6]}
    for i, slices in tumour_slices.items():
        path = rawdata / "Training" / "label" / f"label{i}.nii.gz"
        img = nib.load(path)
        label = np.asanyarray(img.dataobj).copy()
        for z in slices:
            label[8:12, 10:14, z] = 7  # a 'tumour' id in the liver's place
        write_nifti(path, label, img.affine)
    split = {"train": ["0001", "0002", "0003"], "val": ["0004"], "test": ["0005"]}
    cases = iter_cases(rawdata, "rawdata", sum(split.values(), []))
    meta = prepare_dataset(cases, split, tmp_path / "prep", image_size=32, hu_window=(-200, 300), scale=(-1, 1),
                           task="tumour", label_map={0: 0, 6: 0, 7: 1}, classes=["background", "tumour"],
                           progress=False)
    assert meta["task"] == "tumour" and meta["slices"] == {"train": 3, "val": 8, "test": 8}
    train = load_slices(tmp_path / "prep", "train")
    assert train.case == ["0001", "0001", "0002"] and list(train.index) == [2, 3, 5]
    assert all((train.label[i] == 1).any() for i in range(3))
    assert train.image.min() >= -1 and train.image.min() < -0.5  # air at -1, not 0
    assert len(load_slices(tmp_path / "prep", "val")) == 8  # validation and test: every slice
    with pytest.raises(DataError, match=r"data.classes: task 'organ\+tumour' needs the classes "
                                        r"\[background, <organ>, tumour\]"):
        prepare_dataset(iter_cases(rawdata, "rawdata", ["0001"]), split, tmp_path / "bad", image_size=32,
                        hu_window=(-200, 300), task="organ+tumour", label_map=LABEL_MAP, classes=CLASSES)
    assert not (tmp_path / "bad").exists()
