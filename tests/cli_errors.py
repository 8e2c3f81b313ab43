"""hkd's command line run as a user meets it: its exit code and the one line of its error, and snapshots
that show an input came through unchanged."""

from __future__ import annotations

import zipfile
from pathlib import Path

from hkd.cli import main


def run_cli(capsys, *argv) -> tuple[int, str]:
    """Exit code and stderr of ``hkd ARGV``."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_line_error(err: str) -> str:
    """The error must be a single line and no traceback."""
    lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line and " WARNING " not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (or the file itself) with its bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): p.read_bytes() for p in files}


def zip_of(rawdata: Path, path: Path) -> Path:
    """A zip at ``path`` holding the scans of ``rawdata`` under ``RawData/``, as the dataset is shipped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for p in rawdata.rglob("*.nii.gz"):
            z.write(p, "RawData/" + p.relative_to(rawdata).as_posix())
    return path
