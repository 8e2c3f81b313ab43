"""Scans are checked where they enter: geometry, voxel values, case files and header sizes that cannot be
read as a CT volume are refused in one line naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_errors import one_line_error, run_cli
from conftest import LPS_AFFINE, make_case, write_nifti

from hkd.data.nifti import load_raw_case
from hkd.data.readers.rawdata import find_raw_cases
from hkd.errors import DataError


def test_infinite_voxels_are_rejected_naming_file_and_value(rawdata):
    path = rawdata / "Training" / "img" / "img0001.nii.gz"
    image, _ = make_case(seed=1)
    image = image.astype(np.float32)
    image[3, 3, 3], image[4, 4, 4] = np.inf, -np.inf
    write_nifti(path, image)
    with pytest.raises(DataError, match=r"img0001.nii.gz: contains NaN or infinite voxels \(2 voxels: -inf, inf\)"):
        load_raw_case(find_raw_cases(rawdata)[0])


def _patch_header(path: Path, pixdim=None, codes=None) -> None:
    """Rewrite header fields of an uncompressed .nii as another tool might have written them."""
    data = bytearray(path.read_bytes())
    if pixdim is not None:
        data[80:92] = np.asarray(pixdim, "<f4").tobytes()  # pixdim[1:4] (pixdim starts at byte 76)
    if codes is not None:
        data[252:256] = np.asarray(codes, "<i2").tobytes()  # qform_code, sform_code
    path.write_bytes(bytes(data))


def _replace_case(rawdata: Path, number: str, affine=LPS_AFFINE, suffix=".nii") -> tuple[Path, Path]:
    for sub in ("img", "label"):
        for old in (rawdata / "Training" / sub).glob(f"{sub}{number}.nii*"):
            old.unlink()
    image, label = make_case(seed=3)
    img = rawdata / "Training" / "img" / f"img{number}{suffix}"
    lab = rawdata / "Training" / "label" / f"label{number}{suffix}"
    for path, arr in ((img, image), (lab, label)):
        hdr = nib.Nifti1Header()
        hdr.set_data_dtype(arr.dtype)
        nib.save(nib.Nifti1Image(arr, affine, hdr), path)
    return img, lab


def test_zero_length_voxel_axis_is_one_line_in_split_and_prepare(rawdata, tmp_path, capsys):
    img, lab = _replace_case(rawdata, "0003")
    # an sform with a zero-length x axis and no qform, as some converters write it
    zero_x = np.diag([0.0, 0.8, 3.0, 1.0])
    for path in (img, lab):
        loaded = nib.load(path, mmap=False)
        hdr, arr = loaded.header.copy(), np.asanyarray(loaded.dataobj).copy()
        hdr.set_sform(zero_x, code=1)
        hdr.set_qform(None, code=0)
        nib.save(nib.Nifti1Image(arr, None, hdr), path)
    with pytest.raises(DataError, match=r"img0003.nii: affine has a zero-length voxel axis \(i"):
        load_raw_case(find_raw_cases(rawdata)[2])
    code, err = run_cli(capsys, "split", "--source", rawdata, "--out", tmp_path / "split.json")
    assert code == 1 and "img0003.nii: affine has a zero-length voxel axis" in one_line_error(err)
    assert not (tmp_path / "split.json").exists()
    split = tmp_path / "s.json"
    split.write_text(json.dumps({"train": ["0001", "0003"], "val": ["0002"], "test": ["0004"]}))
    prep = {"image_size": 16, "hu_window": [-125, 275], "classes": ["background", "liver"],
            "label_map": {"0": 0, "6": 1}}
    code, err = run_cli(capsys, "prepare", "--source", rawdata, "--split", split, "--params", json.dumps(prep),
                        "--out", tmp_path / "prep", "--quiet")
    assert code == 1 and "img0003.nii: affine has a zero-length voxel axis" in one_line_error(err)
    assert not (tmp_path / "prep").exists()


def test_zero_pixdim_without_qform_or_sform_is_rejected_not_taken_as_1mm(rawdata):
    img, lab = _replace_case(rawdata, "0003")
    for path in (img, lab):
        _patch_header(path, pixdim=[0.0, 0.8, 3.0], codes=[0, 0])
    assert nib.load(img).header.get_zooms()[0] == 1.0  # what nibabel alone would have used
    with pytest.raises(DataError, match=r"img0003.nii: voxel spacing \(pixdim\) \[0.0, 0.8.*\] is zero"):
        load_raw_case(find_raw_cases(rawdata)[2])


def test_pixdim_is_enough_without_qform_or_sform(rawdata):
    img, lab = _replace_case(rawdata, "0003")
    for path in (img, lab):
        _patch_header(path, pixdim=[0.8, 0.8, 3.0], codes=[0, 0])
    case = load_raw_case(find_raw_cases(rawdata)[2])
    assert case.spacing == pytest.approx((3.0, 0.8, 0.8))


def test_zero_spacing_is_refused_whatever_the_header_codes(rawdata, tmp_path, capsys):
    img, lab = _replace_case(rawdata, "0003")
    for path in (img, lab):
        _patch_header(path, pixdim=[0.8, 0.8, 0.0], codes=[1, 0])
    assert nib.load(img).header.get_zooms()[2] == 1.0  # what nibabel alone would have used
    code, err = run_cli(capsys, "split", "--source", rawdata, "--out", tmp_path / "split.json")
    line = one_line_error(err)
    assert code == 1 and f"{img}: voxel spacing (pixdim) [0.8" in line and "qform_code 1" in line, line
    assert not (tmp_path / "split.json").exists()


def test_a_header_declaring_a_huge_volume_is_refused_naming_the_limit(rawdata, tmp_path, capsys):
    img, lab = _replace_case(rawdata, "0002")
    data = bytearray(img.read_bytes())
    data[42:48] = np.asarray([4000, 4000, 4000], "<i2").tobytes()  # dim[1:4]
    img.write_bytes(bytes(data))
    split = tmp_path / "s.json"
    split.write_text(json.dumps({"train": ["0001", "0002"], "val": ["0003"], "test": ["0004"]}))
    prep = {"image_size": 16, "hu_window": [-125, 275], "classes": ["background", "liver"],
            "label_map": {"0": 0, "6": 1}}
    for argv in (["split", "--source", rawdata, "--out", tmp_path / "split.json"],
                 ["prepare", "--source", rawdata, "--split", split, "--params", json.dumps(prep),
                  "--out", tmp_path / "prep", "--quiet"]):
        code, err = run_cli(capsys, *argv)
        line = one_line_error(err)
        assert code == 1 and f"{img}: header declares 4000 x 4000 x 4000 voxels, more than the limit" in line, line
    assert not (tmp_path / "split.json").exists() and not (tmp_path / "prep").exists()


@pytest.mark.parametrize("other", ["img3.nii.gz", "img0003.nii"])
def test_duplicate_case_ids_are_rejected_naming_both_files(rawdata, other):
    src_img = rawdata / "Training" / "img" / "img0003.nii.gz"
    src_lab = rawdata / "Training" / "label" / "label0003.nii.gz"
    suffix = other[other.index("."):]
    number = other[len("img"):other.index(".")]
    image, label = nib.load(src_img), nib.load(src_lab)
    nib.save(image, rawdata / "Training" / "img" / other)
    nib.save(label, rawdata / "Training" / "label" / f"label{number}{suffix}")
    with pytest.raises(DataError, match="case 0003 is also stored as"):
        find_raw_cases(rawdata)


def test_orphan_labels_are_named_in_a_warning(rawdata, caplog):
    (rawdata / "Training" / "img" / "img0004.nii.gz").unlink()
    with caplog.at_level(logging.WARNING, logger="hkd.data.readers.rawdata"):
        cases = find_raw_cases(rawdata)
    assert [c.case_id for c in cases] == ["0001", "0002", "0003", "0005"]
    assert "label0004.nii.gz" in caplog.text


@pytest.mark.parametrize("fmt", ["kits19", "lits"])
def test_a_corrupt_kits19_or_lits_label_is_one_line_naming_the_file(fmt, tmp_path, capsys):
    from hkd.cli import build_parser
    from hkd.data.phantom import write_phantom_dataset
    from hkd.data.sources import FORMATS

    split = build_parser(["split"])._subparsers._group_actions[0].choices["split"]
    assert set(split._option_string_actions["--format"].choices) == set(FORMATS)  # the CLI offers every reader
    root = tmp_path / fmt
    write_phantom_dataset(root, n_cases=3, seed=0, size=32, slices=(4, 5), layout=fmt, tumours={})
    code, err = run_cli(capsys, "split", "--source", root, "--format", fmt, "--ratios", 0.34, 0.33, 0.33,
                        "--out", tmp_path / "split.json")
    assert code == 0, err
    label = root / ("case_00001/segmentation.nii.gz" if fmt == "kits19" else "segmentation-1.nii")
    label.write_bytes(b"not a nifti header at all" * 20)
    params = json.dumps({"image_size": 16, "hu_window": [-40, 160], "label_map": {"0": 0, "1": 1, "2": 2},
                         "classes": ["background", "organ", "tumour"], "task": "organ+tumour", "scale": [-1, 1]})
    code, err = run_cli(capsys, "prepare", "--source", root, "--format", fmt, "--split", tmp_path / "split.json",
                        "--params", params, "--out", tmp_path / "prep", "--quiet")
    assert code == 1 and f"{label}: not a readable NIfTI" in one_line_error(err)
    assert not (tmp_path / "prep").exists()
