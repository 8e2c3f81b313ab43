"""An evaluation without cases, or an evaluation table without rows, is an error naming the part or the file,
and nothing is written.
"""

from __future__ import annotations

import json
import shutil

from cli_errors import one_line_error, run_cli

from hkd.train.trainer import train


def test_evaluating_an_empty_part_is_an_error_and_writes_nothing(prepared, tmp_path, capsys):
    data = tmp_path / "prep"
    shutil.copytree(prepared, data)
    meta = json.loads((data / "dataset.json").read_text())
    meta["split"]["test"] = []
    (data / "dataset.json").write_text(json.dumps(meta))
    run = tmp_path / "run"
    cfg = {"model": {"arch": "squeezeunet", "width": 0.25}, "epochs": 1, "batch_size": 8, "device": "cpu"}
    train(cfg, prepared, run, progress=False)
    code, err = run_cli(capsys, "evaluate", "--run", run, "--data", data, "--model-name", "m", "--method",
                        "scratch", "--width", "0.25", "--seed", 0, "--out", tmp_path / "eval.csv")
    assert code == 1 and "the 'test' part has no cases" in one_line_error(err)
    assert not (tmp_path / "eval.csv").exists()


def test_an_evaluation_csv_with_only_its_header_is_named_by_tables_and_hypotheses(tmp_path, capsys):
    from hkd.evaluate.volume import COLUMNS

    evals = tmp_path / "eval.csv"
    evals.write_text(",".join(COLUMNS) + "\n")
    for argv, outs in ((["tables", "--evals", evals, "--out-dir", tmp_path / "tables"], [tmp_path / "tables"]),
                       (["hypotheses", "--evals", evals, "--out-csv", tmp_path / "h.csv", "--out-md", tmp_path / "h.md",
                         "--out-html", tmp_path / "h.html"], [tmp_path / "h.csv", tmp_path / "h.md"])):
        code, err = run_cli(capsys, *argv)
        line = one_line_error(err)
        assert code == 1 and f"{evals}: evaluation CSV without rows (only its header)" in line, line
        assert not any(p.exists() for p in outs)
