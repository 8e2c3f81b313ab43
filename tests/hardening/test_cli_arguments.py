"""Bad command-line arguments get one line naming the argument (and the key inside it); the help is plain text.
"""

from __future__ import annotations

import pytest
from cli_errors import one_line_error, run_cli

from hkd.cli import main


@pytest.mark.parametrize("params, message", [
    ('{"epochs": 1}', "--params: missing key(s) ['model']"),
    ('{"model": {"arch": "squeezeunet"}, "method": "foo"}', "--params: unknown method 'foo'; available: at,"),
    ('{"model": {"arch": "squeezeunet"}, "epoch": 1}', "--params: unknown key(s) ['epoch']"),
    ('{"model": ', "--params: not valid JSON"),
    ("missing.json", "--params: cannot read missing.json"),
])
def test_train_params_errors_name_the_argument_and_key(params, message, tmp_path, capsys, prepared):
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", params, "--out", tmp_path / "run")
    assert code == 1 and message in one_line_error(err)
    assert not (tmp_path / "run").exists()


def test_bad_json_in_other_arguments_is_named(tmp_path, capsys, prepared):
    code, err = run_cli(capsys, "teacher-cache", "--teacher", tmp_path / "t.pt", "--data", prepared,
                        "--method", "logits", "--options", "{temperature: 2}", "--out", tmp_path / "c.h5")
    assert code == 1 and "--options: not valid JSON" in one_line_error(err)
    code, err = run_cli(capsys, "teacher-cache", "--teacher", tmp_path / "t.pt", "--data", prepared,
                        "--method", "telepathy", "--out", tmp_path / "c.h5")
    assert code == 1 and "--method: unknown method 'telepathy'; available:" in one_line_error(err)
    code, err = run_cli(capsys, "figures", "--data", prepared, "--models", "teacher", "--out-dir", tmp_path / "f")
    assert code == 1 and "--models: expected NAME=RUN_FOLDER" in one_line_error(err)


@pytest.mark.parametrize("source", ["synapse", "kits19"])
@pytest.mark.parametrize("timeout", ["-1", "0", "nan"])
def test_a_download_timeout_that_is_not_positive_is_named(source, timeout, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", "unused")
    code, err = run_cli(capsys, "download", "--source", source, "--out", tmp_path / "dl", "--timeout", timeout)
    line = one_line_error(err)
    assert code == 1 and f"--timeout {float(timeout):g}: must be a positive number of seconds" in line, line
    assert list(tmp_path.iterdir()) == []


def test_every_path_a_command_takes_is_a_declared_input_or_output():
    """The guard checks outputs against inputs by these declarations (hkd/cli.py): a path argument left out
    of both would escape it."""
    import argparse
    from pathlib import Path

    from hkd.cli import build_parser

    commands = next(a for a in build_parser(None)._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, parser in commands.items():
        declared = set(parser.get_default("inputs") or ()) | set(parser.get_default("outputs") or ())
        paths = {a.dest for a in parser._actions if a.type is Path}
        assert paths <= declared, (name, sorted(paths - declared))
        assert declared <= {a.dest for a in parser._actions}, (name, sorted(declared))  # no stale name


def test_help_has_no_markup_and_figures_does_not_claim_the_context_table(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "hkd" in text
    with pytest.raises(SystemExit):
        main(["figures", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Grad-CAM context table is 'hkd context'" in text
    assert "and the Grad-CAM context table" not in text
