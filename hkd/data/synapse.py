"""Getting the real Synapse data: download with synapseclient, checksum, safe zip extraction."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from hkd.data.cases import DataError
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


def download(entity: str, out_path: str | Path, expected_md5: str | None = None) -> Path:
    """Download a Synapse file entity (e.g. RawData.zip, syn3379050) to ``out_path``.

    The token is read by synapseclient itself from SYNAPSE_AUTH_TOKEN or ~/.synapseConfig and is
    never logged or written anywhere by this project.
    """
    if not has_credentials():
        raise DataError(TOKEN_HELP)
    try:
        import synapseclient  # imported lazily: slow to import, only needed here, and an optional extra
    except ImportError as exc:
        raise DataError("downloading from Synapse needs synapseclient, which the plain install leaves out: "
                        "pip install 'hkd[synapse]' (or pip install -e '.[synapse]' in a checkout)") from exc

    out_path = Path(out_path)
    staging = out_path.parent / f".{out_path.name}.download"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        syn = synapseclient.Synapse(skip_checks=True, silent=True)
        syn.login(silent=True)
        entity_file = syn.get(entity, downloadLocation=str(staging), ifcollision="overwrite.local")
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"Synapse download of {entity} failed: {type(exc).__name__}: {exc}") from None
    verify_md5(entity_file.path, expected_md5)
    os.replace(entity_file.path, out_path)
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

