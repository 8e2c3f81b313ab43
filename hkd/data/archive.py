"""Zip archives of cases (downloaded or the user's): checksum, member names, safe extraction."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from hkd.errors import DataError
from hkd.io import atomic_dir


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


def zip_names(path: Path) -> list[str]:
    """The member names of a zip archive, with POSIX separators."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [n.replace("\\", "/") for n in archive.namelist()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable zip file ({exc})") from exc


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
