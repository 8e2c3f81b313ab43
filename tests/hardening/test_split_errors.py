"""Splits that leave a part empty, or name a case twice, are refused before any data is prepared, naming the
ratios and case count or the split argument.
"""

from __future__ import annotations

import json

import pytest
from cli_errors import one_line_error, run_cli, zip_of
from conftest import write_rawdata

from hkd.data.split import make_split
from hkd.errors import DataError


def test_two_cases_with_default_ratios_name_the_ratios_and_count(tmp_path, capsys):
    raw = write_rawdata(tmp_path / "RawData", n=2, shape=(16, 16, 4))
    with pytest.raises(DataError, match="data.split.ratios: 0.6/0.2/0.2 of 2 cases leave the 'val' part empty"):
        make_split(["0001", "0002"], "random", (0.6, 0.2, 0.2))
    code, err = run_cli(capsys, "split", "--source", raw, "--out", tmp_path / "split.json")
    assert code == 1 and "0.6/0.2/0.2 of 2 cases leave the 'val' part empty" in one_line_error(err)


def test_a_zero_ratio_leaves_its_part_empty_whatever_the_count():
    ids = [f"{i:04d}" for i in range(1, 31)]
    with pytest.raises(DataError, match="0.8/0/0.2 of 30 cases leave the 'val' part empty"):
        make_split(ids, "random", (0.8, 0.0, 0.2))


def test_case_counts_for_the_dry_run_come_from_file_names(tmp_path):
    from hkd.data.readers import count_cases

    raw = write_rawdata(tmp_path / "RawData", n=2, shape=(16, 16, 4))
    assert count_cases(raw, "folder") == 2
    assert count_cases(zip_of(raw, tmp_path / "RawData.zip"), "zip") == 2
    assert count_cases(tmp_path / "not-downloaded-yet.zip", "zip") is None
    tu = tmp_path / "tu"
    (tu / "train_npz").mkdir(parents=True)
    (tu / "test_vol_h5").mkdir()
    for name in ("case0005_slice000.npz", "case0005_slice001.npz", "case0006_slice000.npz"):
        (tu / "train_npz" / name).write_bytes(b"")  # names only: no file is read
    (tu / "test_vol_h5" / "case0001.npy.h5").write_bytes(b"")
    assert count_cases(tu, "transunet") == 3


PREP = {"image_size": 16, "hu_window": [-125, 275], "classes": ["background", "liver"], "label_map": {"0": 0, "6": 1}}


@pytest.mark.parametrize("split, message", [
    ({"train": ["0001", "0002"], "val": [], "test": ["0003"]}, "--split: split: the 'val' part is empty"),
    ({"train": ["0001"], "val": ["0002"], "test": ["0002", "0003"]},
     "--split: split: case 0002 is in both 'val' and 'test'"),
    ({"train": ["0001"], "val": "0002", "test": ["0003"]}, "--split: expected a JSON object with 'train'"),
])
def test_prepare_checks_the_split_it_is_given_as_split_does(split, message, rawdata, tmp_path, capsys):
    for value in (json.dumps(split), tmp_path / "s.json"):
        (tmp_path / "s.json").write_text(json.dumps(split))
        code, err = run_cli(capsys, "prepare", "--source", rawdata, "--split", value, "--params", json.dumps(PREP),
                            "--out", tmp_path / "prep", "--quiet")
        line = one_line_error(err)
        assert code == 1 and message in line, line
        assert not (tmp_path / "prep").exists()
