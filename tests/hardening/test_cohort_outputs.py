"""The lock-step cohort's outputs: a publish folder holding an input is refused; a damaged store file is
retrained and the good copy published.
"""

from __future__ import annotations

import json

import torch
from cli_errors import one_line_error, run_cli, snapshot

from hkd.models.checkpoint import load_model

SMALL = {"model": {"arch": "squeezeunet", "width": 0.25}, "epochs": 1, "batch_size": 8, "device": "cpu"}


def test_publishing_a_member_into_the_teachers_folder_is_refused(prepared, teacher_ckpt, tmp_path, capsys):
    t = tmp_path / "t"
    t.mkdir()
    (t / "best.pt").write_bytes(teacher_ckpt.read_bytes())
    before = snapshot(t)
    code, err = run_cli(capsys, "train-cohort", "--data", prepared, "--members", json.dumps({"a": SMALL}),
                        "--root", tmp_path / "store", "--teacher", t / "best.pt", "--publish", '{"a": "%s"}' % t,
                        "--manifest", tmp_path / "m.json", "--quiet")
    line = one_line_error(err)
    assert code == 1 and f"--publish 'a' {t} contains the input --teacher {t / 'best.pt'}" in line, line
    assert snapshot(t) == before and not (tmp_path / "m.json").exists()


def test_a_truncated_store_file_is_named_and_once_removed_retrained_and_published(prepared, tmp_path, capsys):
    """A store file changed since hkd wrote it (hkd writes atomically: something else cut it) is no longer
    hkd's: named, kept; once the user removes it, the member trains again."""
    store, pub = tmp_path / "store", tmp_path / "pub"
    argv = ["train-cohort", "--data", prepared, "--members", json.dumps({"a": SMALL}), "--root", store,
            "--publish", json.dumps({"a": str(pub)}), "--manifest", tmp_path / "m.json", "--quiet"]
    assert run_cli(capsys, *argv)[0] == 0
    good = (store / "a" / "best.pt").read_bytes()
    weights = load_model(store / "a" / "best.pt")[0].state_dict()
    assert run_cli(capsys, *argv)[0] == 0  # unchanged: kept
    assert json.loads((tmp_path / "m.json").read_text())["members"]["a"]["trained"] is False
    (store / "a" / "best.pt").write_bytes(good[: len(good) // 2])  # truncated, identity.json still there
    code, err = run_cli(capsys, *argv)
    line = one_line_error(err)
    assert code == 1 and "holds best.pt, which hkd may not replace: it was changed since hkd wrote it" in line, line
    assert (store / "a" / "best.pt").read_bytes() == good[: len(good) // 2]
    (store / "a" / "best.pt").unlink()
    code, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert json.loads((tmp_path / "m.json").read_text())["members"]["a"]["trained"] is True
    for path in (store / "a" / "best.pt", pub / "best.pt"):  # retrained and published: the same weights
        again = load_model(path)[0].state_dict()
        assert all(torch.equal(weights[k], again[k]) for k in weights)
