"""An output that is, contains or lies inside an input, or a file or folder hkd did not write, is refused in
one line naming both, and what was there is left as it was; what hkd itself left behind is replaced or swept.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_errors import one_line_error, run_cli, snapshot, zip_of
from conftest import write_rawdata

from hkd.data.readers.rawdata import find_raw_cases


def _commands(tmp: Path, raw: Path):
    """(command line, the input it must not destroy) for every command that writes and has inputs."""
    zip_path = zip_of(raw, tmp / "zips" / "RawData.zip")
    split = tmp / "split.json"
    split.write_text(json.dumps({"train": ["0001", "0002", "0003"], "val": ["0004"], "test": ["0005"]}))
    prep = {"image_size": 16, "hu_window": [-125, 275], "classes": ["background", "liver"],
            "label_map": {"0": 0, "6": 1}}
    data = tmp / "prepared"
    (data / "volumes").mkdir(parents=True)
    (data / "dataset.json").write_text("{}")
    run = tmp / "run"
    run.mkdir()
    (run / "metrics.json").write_text('{"status": "ok"}')
    evals = tmp / "eval.csv"
    evals.write_text("model,value\n")
    return {
        "extract into the zip's folder": (["extract", "--zip", zip_path, "--out", zip_path.parent], zip_path),
        "extract onto the zip": (["extract", "--zip", zip_path, "--out", zip_path], zip_path),
        "prepare onto the source": (["prepare", "--source", raw, "--split", split, "--params", json.dumps(prep),
                                     "--out", raw], raw),
        "prepare into the source's parent": (["prepare", "--source", raw, "--split", split,
                                              "--params", json.dumps(prep), "--out", raw.parent], raw),
        "split inside the source": (["split", "--source", raw, "--out", raw / "split.json"], raw),
        "split onto the split file": (["split", "--source", raw, "--preset", "file", "--file", split,
                                       "--out", split], split),
        "train onto the data": (["train", "--data", data, "--params", '{"model": {"arch": "squeezeunet"}}',
                                 "--out", data], data),
        "train work folder holding the data": (["train", "--data", data, "--params",
                                                '{"model": {"arch": "squeezeunet"}}', "--out", tmp / "t",
                                                "--work", tmp], data),
        "teacher-cache inside the data": (["teacher-cache", "--teacher", run / "best.pt", "--data", data,
                                           "--method", "logits", "--out", data / "cache.h5"], data),
        "evaluate inside the run": (["evaluate", "--run", run, "--data", data, "--model-name", "m", "--method",
                                     "scratch", "--width", "1", "--seed", 0, "--out", run / "eval.csv"], run),
        "tables onto an evaluation": (["tables", "--evals", evals, "--out-dir", tmp], evals),
        "hypotheses onto an evaluation": (["hypotheses", "--evals", evals, "--out-csv", evals, "--out-md",
                                           tmp / "h.md", "--out-html", tmp / "h.html"], evals),
        "figures into the data": (["figures", "--data", data, "--models", f"teacher={run}", "--out-dir", data],
                                  data),
        "figures into a run": (["figures", "--data", data, "--models", f"teacher={run}", "--out-dir", run / "f"],
                               run),
        "context inside the data": (["context", "--data", data, "--runs", "[]", "--out", data / "c.csv"], data),
    }


COMMANDS = ["extract into the zip's folder", "extract onto the zip", "prepare onto the source",
            "prepare into the source's parent", "split inside the source", "split onto the split file",
            "train onto the data", "train work folder holding the data", "teacher-cache inside the data",
            "evaluate inside the run", "tables onto an evaluation", "hypotheses onto an evaluation",
            "figures into the data", "figures into a run", "context inside the data"]


@pytest.mark.parametrize("case", COMMANDS)
def test_an_output_over_an_input_is_refused_and_the_input_survives(case, tmp_path, capsys):
    raw = write_rawdata(tmp_path / "src" / "RawData", n=5, shape=(16, 16, 4))
    argv, victim = _commands(tmp_path, raw)[case]
    before = snapshot(victim)
    code, err = run_cli(capsys, *argv)
    line = one_line_error(err)
    assert code == 1
    assert "the input --" in line and str(victim) in line, line
    assert snapshot(victim) == before, "an input was changed"


def test_an_earlier_output_is_replaced_but_a_foreign_folder_is_not(tmp_path, capsys):
    raw = write_rawdata(tmp_path / "RawData", n=5, shape=(16, 16, 4))
    zip_path = zip_of(raw, tmp_path / "RawData.zip")
    out = tmp_path / "extracted"
    assert run_cli(capsys, "extract", "--zip", zip_path, "--out", out)[0] == 0
    (out / "RawData" / "Training" / "img" / "img0001.nii.gz").unlink()
    assert run_cli(capsys, "extract", "--zip", zip_path, "--out", out)[0] == 0  # an earlier output: replaced
    assert len(find_raw_cases(out)) == 5
    mine = tmp_path / "my-documents"
    (mine / "thesis.txt").parent.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    for argv in (["extract", "--zip", zip_path, "--out", mine], ["phantom", "--out", mine, "--cases", 3]):
        code, err = run_cli(capsys, *argv)
        line = one_line_error(err)
        assert code == 1 and f"{mine} exists and holds thesis.txt, which hkd may not replace (hkd did not write it" \
            in line, line
        assert (mine / "thesis.txt").read_text() == "years of work"


def test_a_symlink_to_an_input_counts_as_the_input(tmp_path, capsys):
    raw = write_rawdata(tmp_path / "RawData", n=5, shape=(16, 16, 4))
    (tmp_path / "link").symlink_to(raw)
    before = snapshot(raw)
    code, err = run_cli(capsys, "split", "--source", raw, "--out", tmp_path / "link" / "s.json")
    assert code == 1 and "lies inside the input --source" in one_line_error(err)
    assert snapshot(raw) == before


def test_split_refuses_to_replace_a_file_hkd_did_not_write(rawdata, tmp_path, capsys):
    notes = tmp_path / "user" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("my notes")
    code, err = run_cli(capsys, "split", "--source", rawdata, "--out", notes)
    line = one_line_error(err)
    assert code == 1 and f"{notes} exists and hkd did not write it" in line, line
    assert notes.read_text() == "my notes"
    mine = tmp_path / "user" / "package.json"
    mine.write_text('{"name": "mine"}')
    assert run_cli(capsys, "split", "--source", rawdata, "--out", mine)[0] == 1 and mine.read_text() == '{"name": "mine"}'
    split = tmp_path / "split.json"  # hkd's own split is replaced on a rerun
    assert run_cli(capsys, "split", "--source", rawdata, "--out", split)[0] == 0
    assert run_cli(capsys, "split", "--source", rawdata, "--out", split, "--seed", 1)[0] == 0
    assert json.loads(split.read_text())["seed"] == 1


PREP = {"image_size": 16, "hu_window": [-125, 275], "classes": ["background", "liver"], "label_map": {"0": 0, "6": 1}}


def test_stale_temporaries_of_a_killed_prepare_are_removed_on_the_next_run(rawdata, tmp_path, capsys):
    from hkd import record

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        temps = {}
        for name, pid in (("killed", dead.pid), ("running", alive.pid)):
            temps[name] = tmp_path / f".prep.{name}"
            (temps[name] / "volumes").mkdir(parents=True)
            with record.updating(tmp_path) as rec:  # recorded by the write that made it
                rec["writing"][temps[name].name] = {"pid": pid, "host": socket.gethostname(), "kind": "folder",
                                                    "by": "hkd prepare"}
        temps["user"] = tmp_path / ".prep.mine"  # not recorded, so not hkd's: never touched
        temps["user"].mkdir()
        split = tmp_path / "s.json"
        split.write_text(json.dumps({"train": ["0001", "0002"], "val": ["0003"], "test": ["0004"]}))
        code, err = run_cli(capsys, "prepare", "--source", rawdata, "--split", split, "--params", json.dumps(PREP),
                            "--out", tmp_path / "prep", "--quiet")
        assert code == 0, err
        assert not temps["killed"].exists() and temps["running"].exists() and temps["user"].exists()
        assert (tmp_path / "prep" / "dataset.json").exists()
    finally:
        alive.kill()
        alive.wait()
