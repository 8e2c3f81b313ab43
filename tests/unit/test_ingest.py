"""Ingest: reading, validating and reorienting raw cases; bad input gets clear errors."""

from __future__ import annotations

import gzip
import zipfile

import nibabel as nib
import numpy as np
import pytest

from hkd.data.archive import extract_zip
from hkd.data.downloaders.synapse import TOKEN_HELP, download, has_credentials
from hkd.data.nifti import load_raw_case, raw_depth
from hkd.data.readers import count_cases, list_cases
from hkd.data.readers.kits19_lits import find_layout_cases
from hkd.data.readers.rawdata import find_raw_cases
from hkd.errors import DataError

from conftest import RAS_AFFINE, REAL_CT, make_case, write_nifti


def test_lps_and_ras_cases_reorient_to_the_same_display_arrays(rawdata):
    cases = {c.case_id: load_raw_case(c) for c in find_raw_cases(rawdata)}
    # case 1 is LPS, case 2 RAS; both hold a liver block on the patient's right
    for cid in ("0001", "0002"):
        case = cases[cid]
        assert case.image.shape == (8, 32, 32)  # (z, row, column)
        cols = np.nonzero(case.label == 6)[2]
        assert cols.mean() < 16, "patient's right must be on the left of the image"
        assert case.spacing == pytest.approx((3.0, 0.8, 0.8))
    np.testing.assert_array_equal(cases["0002"].image, load_raw_case(find_raw_cases(rawdata)[1]).image)
    assert cases["0002"].image.dtype == np.float32
    assert set(np.unique(cases["0002"].label)) == {0, 6}
    assert raw_depth(find_raw_cases(rawdata)[0]) == 8


def test_missing_label_names_the_image(rawdata):
    (rawdata / "Training" / "label" / "label0003.nii.gz").unlink()
    with pytest.raises(DataError, match="img0003.nii.gz: no matching label"):
        find_raw_cases(rawdata)


def test_folder_without_rawdata_layout(tmp_path):
    with pytest.raises(DataError, match="no Training/img folder"):
        find_raw_cases(tmp_path)


def test_truncated_nifti_is_reported(rawdata):
    path = rawdata / "Training" / "img" / "img0001.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="img0001.nii.gz"):
        load_raw_case(find_raw_cases(rawdata)[0])


def test_corrupt_nifti_is_reported(rawdata):
    path = rawdata / "Training" / "label" / "label0002.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    with pytest.raises(DataError, match="label0002.nii.gz: not a readable NIfTI"):
        load_raw_case(find_raw_cases(rawdata)[1])


def test_shape_mismatch(rawdata):
    write_nifti(rawdata / "Training" / "label" / "label0001.nii.gz", np.zeros((32, 32, 7), np.uint8))
    with pytest.raises(DataError, match=r"label0001.nii.gz: shape \(32, 32, 7\) does not match"):
        load_raw_case(find_raw_cases(rawdata)[0])


def test_affine_mismatch(rawdata):
    _, label = make_case(seed=1)
    write_nifti(rawdata / "Training" / "label" / "label0001.nii.gz", label, RAS_AFFINE)
    with pytest.raises(DataError, match="label0001.nii.gz: affine does not match"):
        load_raw_case(find_raw_cases(rawdata)[0])


def test_nan_voxels(rawdata):
    image, _ = make_case(seed=1)
    image = image.astype(np.float32)
    image[3, 3, 3] = np.nan
    write_nifti(rawdata / "Training" / "img" / "img0001.nii.gz", image)
    with pytest.raises(DataError, match="img0001.nii.gz: contains NaN"):
        load_raw_case(find_raw_cases(rawdata)[0])


@pytest.mark.parametrize("shape", [(32, 32, 8), (32, 32, 0)])
def test_constant_or_empty_volume(rawdata, shape):
    write_nifti(rawdata / "Training" / "img" / "img0001.nii.gz", np.full(shape, -1000, np.int16))
    write_nifti(rawdata / "Training" / "label" / "label0001.nii.gz", np.zeros(shape, np.uint8))
    with pytest.raises(DataError, match="img0001.nii.gz: (constant|empty)"):
        load_raw_case(find_raw_cases(rawdata)[0])


def test_non_integer_labels(rawdata):
    _, label = make_case(seed=1)
    write_nifti(rawdata / "Training" / "label" / "label0001.nii.gz", label.astype(np.float32) + 0.5)
    with pytest.raises(DataError, match="label0001.nii.gz: label values must be integers"):
        load_raw_case(find_raw_cases(rawdata)[0])


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


@pytest.mark.parametrize("evil", ["../escape.txt", "RawData/../../escape.txt", "/etc/evil.txt"])
def test_zip_entries_escaping_the_target_are_refused(tmp_path, evil):
    archive = _zip(tmp_path / "RawData.zip", {"RawData/Training/img/a.txt": "ok", evil: "bad"})
    out = tmp_path / "out" / "RawData"
    with pytest.raises(DataError, match="outside the target folder"):
        extract_zip(archive, out)
    assert not out.exists() and not (tmp_path / "escape.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []  # nothing half-written


def test_zip_extracts_and_checks_md5(tmp_path):
    archive = _zip(tmp_path / "RawData.zip", {"RawData/Training/img/a.txt": "ok"})
    with pytest.raises(DataError, match="MD5 .* does not match the configured data.md5"):
        extract_zip(archive, tmp_path / "out", expected_md5="0" * 32)
    extract_zip(archive, tmp_path / "out")
    assert (tmp_path / "out" / "RawData" / "Training" / "img" / "a.txt").read_text() == "ok"


def test_corrupt_zip(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(DataError, match="bad.zip: not a readable zip"):
        extract_zip(tmp_path / "bad.zip", tmp_path / "out")


def test_missing_synapse_credentials_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNAPSE_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not has_credentials()
    with pytest.raises(DataError) as err:
        download("syn3379050", tmp_path / "RawData.zip")
    assert "SYNAPSE_AUTH_TOKEN" in str(err.value) and "Personal Access Token" in str(err.value)
    assert str(err.value) == TOKEN_HELP
    assert not (tmp_path / "RawData.zip").exists()


def test_credentials_from_config_file(tmp_path):
    (tmp_path / ".synapseConfig").write_text("[authentication]\nauthtoken = abc\n")
    assert has_credentials(env={}, home=tmp_path)
    assert has_credentials(env={"SYNAPSE_AUTH_TOKEN": "x"}, home=tmp_path / "none")


@pytest.mark.skipif(not REAL_CT.exists(), reason=f"real CT folder {REAL_CT} is absent")
def test_real_ct_ingest_keeps_image_and_label_aligned():
    (raw,) = find_raw_cases(REAL_CT)
    case = load_raw_case(raw)
    assert case.image.shape == (20, 512, 512)
    assert case.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    hu = np.asanyarray(nib.load(raw.image_path).dataobj)
    lab = np.asanyarray(nib.load(raw.label_path).dataobj)
    assert case.image[case.label == 6].mean() == pytest.approx(hu[lab == 6].mean(), rel=1e-6)
    liver_cols = np.nonzero(case.label == 6)[2].mean()
    spleen_cols = np.nonzero(case.label == 1)[2].mean()
    assert liver_cols < 256 < spleen_cols  # radiological view: liver on the image's left


# ------------------------------------------------------------------ KiTS19 and LiTS layouts

# KiTS19's affine as its README gives it: the axial axis first, running inferior; rows posterior; columns
# to the patient's left; no translation.
KITS19_AFFINE = np.array([[0.0, 0.0, -0.8, 0.0], [0.0, -0.8, 0.0, 0.0], [-3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def as_kits19(lps_volume: np.ndarray) -> np.ndarray:
    """An (x, y, z) volume in LPS voxel order, rewritten in KiTS19's order (z, y, x) for KITS19_AFFINE."""
    ras = lps_volume[::-1, ::-1]  # (R, A, S) voxel order
    return np.ascontiguousarray(ras[::-1, ::-1, ::-1].transpose(2, 1, 0))


def write_kits19(root, n=3, shape=(32, 32, 8), labelled=None):
    """KiTS19 cases case_00000.. with a 'kidney' block (1) and a 'tumour' (2) in it, on the patient's right."""
    for i in range(n):
        image, label = make_case(shape, seed=i)
        label = np.where(label == 6, 1, 0).astype(np.uint8)
        label[4:7, 12:16, 2:5] = 2
        folder = root / f"case_{i:05d}"
        write_nifti(folder / "imaging.nii.gz", as_kits19(image), KITS19_AFFINE)
        if labelled is None or i in labelled:
            write_nifti(folder / "segmentation.nii.gz", as_kits19(label), KITS19_AFFINE)
    return root


def write_lits(root, n=3, shape=(32, 32, 8)):
    """LiTS cases volume-N / segmentation-N (liver 1, tumour 2) in two batch folders, .nii and .nii.gz."""
    for i in range(n):
        image, label = make_case(shape, seed=i)
        label = np.where(label == 6, 1, 0).astype(np.uint8)
        label[4:7, 12:16, 2:5] = 2
        folder, ext = (root / "Training Batch 1", ".nii") if i < 2 else (root / "Training Batch 2", ".nii.gz")
        write_nifti(folder / f"volume-{i}{ext}", image)
        write_nifti(folder / f"segmentation-{i}{ext}", label)
    return root


def test_kits19_axial_first_affine_is_reoriented_from_the_affine(tmp_path, rawdata):
    """KiTS19 files store (z, y, x) with a permuted, negative affine; read back, they equal the same anatomy
    stored as a Synapse LPS case: axial slices, anterior up, the patient's right on the image's left."""
    kits = write_kits19(tmp_path / "kits19" / "data")
    cases = find_layout_cases(tmp_path / "kits19", "kits19")  # a folder above the case folders
    assert [c.case_id for c in cases] == ["00000", "00001", "00002"]
    case = load_raw_case(cases[1])
    synapse = load_raw_case(find_raw_cases(rawdata)[0])  # img0001: make_case(seed=1), LPS
    np.testing.assert_array_equal(case.image, synapse.image)
    assert case.image.shape == (8, 32, 32) and case.spacing == pytest.approx((3.0, 0.8, 0.8))
    np.testing.assert_array_equal(case.label > 0, synapse.label == 6)
    assert np.nonzero(case.label == 1)[2].mean() < 16  # the patient's right on the left of the image
    assert raw_depth(cases[0]) == 8 and list_cases(kits, "kits19") == {"00000": 8, "00001": 8, "00002": 8}


def test_kits19_unlabelled_cases_are_skipped_and_missing_imaging_is_an_error(tmp_path, caplog):
    root = write_kits19(tmp_path / "data", n=3, labelled={0, 2})
    assert [c.case_id for c in find_layout_cases(root, "kits19")] == ["00000", "00002"]
    assert "unlabelled test cases" in caplog.text and "case_00001/imaging.nii.gz" in caplog.text
    (root / "case_00002" / "imaging.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case_00002/segmentation.nii.gz: no image file beside this label; "
                                        r".*hkd download --source kits19"):
        find_layout_cases(root, "kits19")


def test_lits_layout_in_batch_folders_and_its_errors(tmp_path):
    root = write_lits(tmp_path / "LiTS")
    cases = find_layout_cases(root, "lits")
    assert [c.case_id for c in cases] == ["000", "001", "002"]
    assert cases[2].label_path.name == "segmentation-2.nii.gz"
    case = load_raw_case(cases[0])
    assert set(np.unique(case.label)) == {0, 1, 2} and np.nonzero(case.label == 1)[2].mean() < 16
    write_nifti(root / "volume-1.nii", make_case(seed=1)[0])
    with pytest.raises(DataError, match=r"volume-1.nii: no matching label file .*segmentation-1.nii"):
        find_layout_cases(root, "lits")
    write_nifti(root / "segmentation-1.nii", make_case(seed=1)[1])
    with pytest.raises(DataError, match=r"volume-1.nii: case 001 is also stored as .*volume-1.nii; keep one"):
        find_layout_cases(root, "lits")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no labelled lits cases"):
        find_layout_cases(tmp_path / "empty", "lits")


@pytest.mark.parametrize("fmt", ["kits19", "lits"])
def test_kits19_and_lits_zips_are_counted_extracted_safely_and_read(tmp_path, fmt):
    root = write_kits19(tmp_path / "src" / "data") if fmt == "kits19" else write_lits(tmp_path / "src" / "LiTS")
    archive = tmp_path / f"{fmt}.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(root.rglob("*.nii*")):
            z.write(path, path.relative_to(root.parent))
    assert count_cases(archive, fmt) == 3 == count_cases(root, fmt)
    extract_zip(archive, tmp_path / "out")
    assert [c.case_id for c in find_layout_cases(tmp_path / "out", fmt)] == [
        c.case_id for c in find_layout_cases(root, fmt)]
    evil = _zip(tmp_path / "evil.zip", {"data/case_00000/imaging.nii.gz": "x", "../escape.nii.gz": "y"})
    with pytest.raises(DataError, match="outside the target folder"):
        extract_zip(evil, tmp_path / "evil")
