"""The Synapse download ends (at its time limit, on an interrupt, without a network), removes its staging
folder, checks the file's MD5 and never prints the access token.
"""

from __future__ import annotations

import importlib.machinery
import os
import signal
import socket
import sys
import time
import types
from pathlib import Path

import pytest
from cli_errors import one_line_error, run_cli

from hkd.data.downloaders import synapse
from hkd.errors import DataError

TOKEN = "syn-secret-token-0123456789"


@pytest.fixture
def fake_synapse(monkeypatch, tmp_path):
    """A stand-in synapseclient module whose ``get`` runs ``behaviour(staging)``; the network probe passes."""
    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in synapse._PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: types.SimpleNamespace(close=lambda: None))
    module = types.ModuleType("synapseclient")
    module.__spec__ = importlib.machinery.ModuleSpec("synapseclient", None)
    calls = {}

    class Synapse:
        def __init__(self, **kwargs):
            pass

        def login(self, **kwargs):
            pass

        def get(self, entity, downloadLocation, ifcollision):
            calls["staging"] = Path(downloadLocation)
            return calls["behaviour"](Path(downloadLocation))

    module.Synapse = Synapse
    monkeypatch.setitem(sys.modules, "synapseclient", module)
    return calls


def _staging_left(out: Path) -> list[str]:
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_download_succeeds_and_checks_md5(fake_synapse, tmp_path):
    def write(staging):
        (staging / "RawData.zip").write_bytes(b"zip bytes")
        return types.SimpleNamespace(path=str(staging / "RawData.zip"))

    fake_synapse["behaviour"] = write
    out = tmp_path / "dl" / "RawData.zip"
    assert synapse.download("syn1", out) == out and out.read_bytes() == b"zip bytes"
    out.unlink()
    with pytest.raises(DataError, match="does not match the configured data.md5"):
        synapse.download("syn1", out, expected_md5="0" * 32)
    assert not out.exists() and _staging_left(out) == []


def test_download_ends_at_the_time_limit_and_removes_staging(fake_synapse, tmp_path, capsys):
    def hang(staging):
        (staging / "partial.zip").write_bytes(b"half")
        while True:  # a client retrying forever, swallowing ordinary exceptions
            try:
                time.sleep(0.05)
            except Exception:
                pass

    fake_synapse["behaviour"] = hang
    out = tmp_path / "dl" / "RawData.zip"
    start = time.monotonic()
    code, err = run_cli(capsys, "download", "--entity", "syn1", "--out", out, "--timeout", 0.5)
    assert time.monotonic() - start < 10
    assert code == 1 and "no result after 0.5 s" in one_line_error(err)
    assert not out.exists() and _staging_left(out) == []


def test_no_network_says_cannot_reach_synapse_at_once(monkeypatch, fake_synapse, tmp_path, capsys):
    def refuse(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "create_connection", refuse)
    fake_synapse["behaviour"] = lambda staging: pytest.fail("the client must not be used without a network")
    out = tmp_path / "dl" / "RawData.zip"
    code, err = run_cli(capsys, "download", "--out", out)
    assert code == 1 and "cannot reach Synapse (repo-prod.prod.sagebase.org:443" in one_line_error(err)
    assert _staging_left(out) == []


def test_a_connection_error_inside_the_client_says_cannot_reach_and_hides_the_token(fake_synapse, tmp_path):
    def fail(staging):
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as exc:
            raise RuntimeError(f"request with Authorization: Bearer {TOKEN} failed") from exc

    fake_synapse["behaviour"] = fail
    out = tmp_path / "dl" / "RawData.zip"
    with pytest.raises(DataError) as err:
        synapse.download("syn1", out)
    assert "cannot reach Synapse while downloading syn1" in str(err.value)
    assert TOKEN not in str(err.value) and "Bearer ***" in str(err.value)
    assert _staging_left(out) == []


@pytest.mark.parametrize("how", ["KeyboardInterrupt", "SIGTERM"])
def test_an_interrupted_download_removes_its_staging_folder(how, fake_synapse, tmp_path):
    def interrupted(staging):
        (staging / "partial.zip").write_bytes(b"half")
        if how == "SIGTERM":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        raise KeyboardInterrupt

    fake_synapse["behaviour"] = interrupted
    out = tmp_path / "dl" / "RawData.zip"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        synapse.download("syn1", out)
    assert fake_synapse["staging"].parent == out.parent and _staging_left(out) == [] and not out.exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is only in place during the download


def test_missing_synapseclient_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", TOKEN)
    monkeypatch.setitem(sys.modules, "synapseclient", None)  # as if not installed
    code, err = run_cli(capsys, "download", "--out", tmp_path / "RawData.zip")
    assert code == 1 and one_line_error(err).endswith(
        "a Synapse download needs the synapseclient package, which is not installed: pip install 'hkd[synapse]'")
    assert TOKEN not in err
