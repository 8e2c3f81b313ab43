"""A store of finished runs, addressed by what each result depends on (its identity).

A cohort's member folder (``<root>/<name>``) holds the member's run files (:data:`hkd.run_files.RUN_FILES`)
and an entry (:data:`IDENTITY_FILE`) naming the run's identity (:func:`member_identity`: its configuration,
the prepared data, the teacher checkpoint and the training code, :func:`code_digest`) with the checksum of
each run file. A folder whose entry names the same identity and whose files still match their checksums
holds that run complete (:func:`is_complete`), so it is kept instead of trained again; :func:`publish`
copies a member's run files to a folder of the user's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from hkd import distill
from hkd.guard import InputOverwriteError, check_outputs_spare_inputs, remove_own
from hkd.io import atomic_path, write_json
from hkd.run_files import RUN_FILES

IDENTITY_FILE = "identity.json"


def _digest(paths, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for path in paths:
        h.update(str(Path(path).name).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def code_digest(method: str) -> str:
    """Digest of the package files a cohort member of ``method`` runs: the cohort's training code and its
    own method's file, as the workflow declares them, so editing one method retrains only its members."""
    from hkd.workflow_deps import command_modules

    root = Path(__file__).resolve().parents[2]
    return _digest([root / m for m in command_modules("train-cohort", root, [distill.module_of(method)])])


def member_identity(fingerprint: str, method: str, prepared: Path, teacher_ckpt: Path | None, code: str) -> str:
    """What a member's result depends on: its configuration (the run's ``fingerprint``), the prepared
    training and validation data, the teacher checkpoint (members of a distillation ``method``) and the
    training code."""
    files = [Path(prepared) / "train.h5", Path(prepared) / "val.h5"]
    if method != "scratch" and teacher_ckpt is not None:
        files.append(Path(teacher_ckpt))
    return _digest(files, extra=fingerprint + code)


def file_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of each of a run's files in ``folder``, recorded in the store entry when it is written."""
    return {name: _digest([folder / name]) for name in RUN_FILES}


def is_complete(folder: Path, identity: str) -> bool:
    """Whether ``folder`` holds a completed run of ``identity``: its identity file names it, and every run
    file is there with the checksum recorded when the entry was written (a truncated or replaced file
    makes the entry incomplete, so the member is trained again)."""
    try:
        entry = json.loads((folder / IDENTITY_FILE).read_text())
        recorded, sums = entry["identity"], entry["files"]
        return recorded == identity and all(sums[name] == _digest([folder / name]) for name in RUN_FILES)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def record_entry(folder: Path, identity: str) -> None:
    """Mark the run just finished in ``folder`` as the complete run of ``identity``."""
    write_json(folder / IDENTITY_FILE, {"identity": identity, "files": file_checksums(folder)})


def forget_entry(folder: Path) -> None:
    """Remove ``folder``'s entry before its run is trained again (a killed run leaves none)."""
    remove_own(folder / IDENTITY_FILE)


def check_publish(publish: dict[str, Path], inputs: dict[str, Path | None]) -> None:
    """Refuse publish folders that are, contain or lie inside an input (or the store), or are shared by
    two members: each receives a member's run files, replacing those there."""
    outputs = {f"--publish '{name}'": folder for name, folder in publish.items()}
    check_outputs_spare_inputs(outputs, inputs)
    seen: dict[Path, str] = {}
    for name, folder in publish.items():
        key = Path(folder).expanduser().resolve()
        if key in seen:
            raise InputOverwriteError(f"--publish: members '{seen[key]}' and '{name}' both publish to {folder}")
        seen[key] = name


def publish(folder: Path, target: Path) -> None:
    """Copy the run files of ``folder`` into ``target`` (each written atomically, replacing those there)."""
    for file in RUN_FILES:
        with atomic_path(Path(target) / file) as tmp:
            shutil.copyfile(Path(folder) / file, tmp)
