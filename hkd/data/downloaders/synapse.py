"""Downloading the Synapse RawData.zip (``hkd download --source synapse``) with synapseclient.

The archive is checked against ``data.md5`` when one is set and extracted by the workflow's extract
step (:mod:`hkd.data.archive`).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from hkd import extras
from hkd.data.archive import verify_md5
from hkd.data.downloaders import DOWNLOAD_TIMEOUT, Deadline, check_timeout, time_limit
from hkd.errors import DataError

ENTITY = "syn3379050"  # RawData.zip of the 'Multi-Atlas Labeling Beyond the Cranial Vault' challenge

TOKEN_HELP = (
    "Synapse credentials not found. Create a personal access token at synapse.org (Account Settings -> "
    "Personal Access Tokens, with 'view' and 'download' scopes), accept the terms of the 'Multi-Atlas "
    "Labeling Beyond the Cranial Vault' challenge (syn3193805), then either export SYNAPSE_AUTH_TOKEN=<token> "
    "or write it to ~/.synapseConfig under [authentication] as authtoken = <token>."
)


def has_credentials(env: dict | None = None, home: Path | None = None) -> bool:
    """True when a token is available from the environment or ``~/.synapseConfig``."""
    env = os.environ if env is None else env
    if env.get("SYNAPSE_AUTH_TOKEN"):
        return True
    config = (home or Path.home()) / ".synapseConfig"
    return config.is_file() and "authtoken" in config.read_text(errors="ignore").lower()


SYNAPSE_HOST = "repo-prod.prod.sagebase.org"  # Synapse's REST endpoint, used by synapseclient
PROBE_TIMEOUT = 15.0  # seconds for the reachability probe
SYNAPSE_NEEDS = "a Synapse download"  # what needs the synapse extra (its missing-package line)
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _tokens(env: dict | None = None, home: Path | None = None) -> list[str]:
    """Token values that must never appear in a message (from the environment or ~/.synapseConfig)."""
    env = os.environ if env is None else env
    found = [env["SYNAPSE_AUTH_TOKEN"]] if env.get("SYNAPSE_AUTH_TOKEN") else []
    config = (home or Path.home()) / ".synapseConfig"
    if config.is_file():
        for line in config.read_text(errors="ignore").splitlines():
            key, _, value = line.partition("=")
            if key.strip().lower() == "authtoken" and value.strip():
                found.append(value.strip())
    return found


def redact(text: str) -> str:
    """``text`` with every known Synapse token replaced by ``***``."""
    for token in _tokens():
        text = text.replace(token, "***")
    return text


def check_reachable(host: str = SYNAPSE_HOST, timeout: float = PROBE_TIMEOUT) -> None:
    """Fail fast with "cannot reach Synapse" when ``host`` does not answer on port 443.

    Skipped behind a proxy (the client connects through it, not directly).
    """
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as exc:
        raise DataError(f"cannot reach Synapse ({host}:443: {exc.strerror or exc}); check the network "
                        "connection, or set HTTPS_PROXY if you use a proxy") from None


def _is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` or an exception it wraps is a network failure (of any HTTP library)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        name = type(exc).__name__
        if isinstance(exc, (ConnectionError, socket.gaierror, socket.timeout)) or "Connect" in name:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def download(entity: str, out_path: str | Path, expected_md5: str | None = None,
             timeout: float | None = DOWNLOAD_TIMEOUT) -> Path:
    """Download a Synapse file entity (e.g. RawData.zip, syn3379050) to ``out_path``.

    The token is read by synapseclient itself from SYNAPSE_AUTH_TOKEN or ~/.synapseConfig and is
    never logged or written anywhere by this project. The whole download is abandoned after
    ``timeout`` seconds; on any failure or interrupt the staging folder is removed and ``out_path``
    is left as it was.
    """
    check_timeout(timeout)
    if not has_credentials():
        raise DataError(TOKEN_HELP)
    try:
        extras.check("synapseclient", SYNAPSE_NEEDS)
    except extras.MissingExtra as exc:
        raise DataError(str(exc)) from None
    out_path = Path(out_path)
    staging = out_path.parent / f".{out_path.name}.download"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        with time_limit(timeout, f"Synapse download of {entity}"):
            check_reachable()
            synapseclient = extras.require("synapseclient", SYNAPSE_NEEDS)  # slow to import: only here

            try:
                syn = synapseclient.Synapse(skip_checks=True, silent=True)
                syn.login(silent=True)
                entity_file = syn.get(entity, downloadLocation=str(staging), ifcollision="overwrite.local")
            except Exception as exc:
                detail = redact(" ".join(f"{type(exc).__name__}: {exc}".split()))
                if _is_connection_error(exc):
                    raise DataError(f"cannot reach Synapse while downloading {entity} ({detail}); check the "
                                    "network connection") from None
                raise DataError(f"Synapse download of {entity} failed: {detail}") from None
        verify_md5(entity_file.path, expected_md5)
        os.replace(entity_file.path, out_path)
    except Deadline as exc:
        raise DataError(str(exc)) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_path


# --- hkd download --source synapse ------------------------------------------------------------------
def add_arguments(group) -> None:
    group.add_argument("--entity", default=ENTITY, help=f"synapse: the file entity (default {ENTITY}, RawData.zip)")
    group.add_argument("--md5", default=None, help="synapse: the archive's expected MD5")


def run(args) -> str:
    """Download the entity to ``args.out``; returns what was downloaded."""
    download(args.entity, args.out, args.md5, timeout=args.timeout)
    return args.entity
