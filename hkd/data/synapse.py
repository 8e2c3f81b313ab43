"""Getting the real Synapse data: download with synapseclient, checksum, safe zip extraction."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import threading
import zipfile
from pathlib import Path, PurePosixPath

from hkd.errors import DataError
from hkd.io import atomic_dir

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


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path: str | Path, expected: str | None) -> None:
    """Raise DataError when ``expected`` is set and differs from the file's MD5."""
    if expected:
        actual = md5sum(path)
        if actual.lower() != expected.lower():
            raise DataError(f"{path}: MD5 {actual} does not match the configured data.md5 {expected}")


# Seconds before a whole download is abandoned (hkd download --timeout, config data.download_timeout).
# RawData.zip is about 1.5 GB: two hours allow ~0.2 MB/s; without a network the reachability probe
# fails within PROBE_TIMEOUT instead.
DOWNLOAD_TIMEOUT = 7200.0
SYNAPSE_HOST = "repo-prod.prod.sagebase.org"  # Synapse's REST endpoint, used by synapseclient
PROBE_TIMEOUT = 15.0
INSTALL_HELP = "Synapse downloads need the synapseclient package: pip install 'hkd[synapse]'"
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


class Deadline(BaseException):
    """The overall download time ran out (a BaseException, so that retry loops cannot swallow it)."""


def check_timeout(seconds: float | None) -> None:
    """A download's time limit must be a positive number of seconds (None: no limit)."""
    if seconds is not None and not (isinstance(seconds, (int, float)) and 0 < seconds < float("inf")):
        raise DataError(f"--timeout {seconds:g}: must be a positive number of seconds (config data.download_timeout)")


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str):
    """Raise DataError in the main thread once ``seconds`` have passed; SIGTERM raises KeyboardInterrupt.

    synapseclient has no overall deadline (it retries failed requests for a long time), hence this
    signal-based one. Off the main thread, or without SIGALRM, no limit is set.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise Deadline(f"{what}: no result after {seconds:g} s (hkd download --timeout, "
                           "config data.download_timeout)")

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"{what}: terminated")

    old_alarm = signal.signal(signal.SIGALRM, on_alarm)
    old_term = signal.signal(signal.SIGTERM, on_term)
    if seconds:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGTERM, old_term)


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
    if importlib.util.find_spec("synapseclient") is None:
        raise DataError(INSTALL_HELP)
    out_path = Path(out_path)
    staging = out_path.parent / f".{out_path.name}.download"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        with time_limit(timeout, f"Synapse download of {entity}"):
            check_reachable()
            import synapseclient  # imported lazily: slow to import and only needed here

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


def _safe_member(name: str, zip_path: Path) -> PurePosixPath:
    member = PurePosixPath(name.replace("\\", "/"))
    if member.is_absolute() or ".." in member.parts or (member.parts and ":" in member.parts[0]):
        raise DataError(f"{zip_path}: entry '{name}' would be written outside the target folder")
    return member


def extract_zip(zip_path: str | Path, out_dir: str | Path, expected_md5: str | None = None) -> Path:
    """Extract ``zip_path`` into ``out_dir`` atomically, refusing entries that escape it."""
    zip_path = Path(zip_path)
    verify_md5(zip_path, expected_md5)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{zip_path}: not a readable zip file ({exc})") from exc
    with archive, atomic_dir(out_dir) as tmp:
        members = archive.infolist()
        for info in members:  # check every entry before writing anything
            _safe_member(info.filename, zip_path)
        for info in members:
            target = tmp.joinpath(*_safe_member(info.filename, zip_path).parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise DataError(f"{zip_path}: entry '{info.filename}' is corrupt ({exc})") from exc
    return Path(out_dir)

