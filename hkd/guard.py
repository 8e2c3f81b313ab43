"""The one guard for every path an hkd command writes or deletes: it never destroys what hkd did not write.

Three rules, checked before any work:

* An output may not be, contain or lie inside an input of the same command
  (:func:`check_outputs_spare_inputs`; symbolic links are resolved).
* A folder is replaced or deleted only when it is empty or carries :data:`OUTPUT_MARKER` as hkd writes it
  (:func:`is_marked`), the file hkd puts into every folder it creates (outputs written by
  :func:`hkd.io.atomic_dir`, a training run's folders, :func:`claim_folder`). A run folder, whose files hkd
  replaces and deletes by name, is hkd's only when it is new, empty or marked: files in an unmarked folder
  are never touched, whatever their names and forms.
* A file is replaced only when it lies in a folder hkd created (marked as above), is empty, or has the
  form hkd gives the files it writes, recognised
  by suffix and content (:func:`written_by_hkd`): ``.json`` an object with the keys of one of hkd's
  JSON files, ``.csv`` a header naming one of hkd's columns, ``.md`` a table or hkd's verdict page,
  ``.html`` a page with hkd's table or overview classes, ``.pt`` a torch checkpoint, ``.h5`` HDF5,
  ``.png`` a PNG image, ``.nii``/``.nii.gz`` a segmentation carrying ``hkd predict``'s header extension,
  ``.npz`` its probabilities, ``.onnx`` a model with ``hkd export``'s metadata. A file of any other kind is
  never replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

# Marks a folder hkd created: only such a folder (or an empty one) is ever replaced or deleted.
OUTPUT_MARKER = ".hkd-output"
_MARKER_TEXT = "written by hkd; this folder is replaced when its command reruns\n"

# Keys that identify hkd's JSON files: a split, a cohort manifest, run metrics, a store entry's identity.
_JSON_KEYS = ({"train", "val", "test"}, {"members"}, {"status", "model"}, {"identity"},
              {"case", "classes", "voxel_volume_mm3"}, {"export", "parity"})
# Columns of hkd's CSV files: evaluations, tables, verdicts, context (method), training logs (epoch),
# data summaries (class), model costs (runtime).
_CSV_COLUMNS = {"method", "epoch", "class", "runtime"}


class InputOverwriteError(ValueError):
    """An output path whose writing would destroy an input or something hkd did not write."""


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve(strict=False)


def _relation(a: Path, b: Path) -> str | None:
    """How resolved path ``a`` relates to ``b``: 'is', 'contains', 'lies inside' or None."""
    if a == b:
        return "is"
    if a in b.parents:
        return "contains"
    if b in a.parents:
        return "lies inside"
    return None


def check_outputs_spare_inputs(outputs: dict[str, str | os.PathLike | None],
                               inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse any output that is, contains or lies inside an input: writing it would destroy data.

    Both arguments map a name used in messages (e.g. ``--out``) to a path (``None`` entries are
    skipped). Symbolic links are resolved, so a link to an input counts as the input.
    """
    ins = {name: _resolved(p) for name, p in inputs.items() if p is not None}
    for out_name, out_path in outputs.items():
        if out_path is None:
            continue
        out = _resolved(out_path)
        for in_name, src in ins.items():
            how = _relation(out, src)
            if how:
                raise InputOverwriteError(f"{out_name} {out_path} {how} the input {in_name} {inputs[in_name]}; "
                                          "choose an output path outside the inputs (nothing was written)")


def check_apart(name: str, path: str | os.PathLike, other_name: str, other: str | os.PathLike) -> None:
    """Refuse ``path`` (a folder hkd deletes when done) when it is or contains ``other`` (one it keeps)."""
    how = _relation(_resolved(path), _resolved(other))
    if how in ("is", "contains"):
        raise InputOverwriteError(f"{name} {path} {how} {other_name} {other}; {name} is deleted when the run "
                                  f"ends, so it must lie apart from {other_name} (nothing was written)")


def _head(path: Path, n: int = 4096) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def written_by_hkd(path: str | os.PathLike) -> bool:
    """Whether the existing file ``path`` has the form of a file hkd writes (see the module docstring)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if path.stat().st_size == 0:
            return True
        if suffix == ".json":
            obj = json.loads(path.read_text())
            return isinstance(obj, dict) and any(keys <= set(obj) for keys in _JSON_KEYS)
        head = _head(path)
        if suffix == ".csv":
            header = head.decode("utf-8", "replace").splitlines()[0]
            return bool(_CSV_COLUMNS & {c.strip().strip('"') for c in header.split(",")})
        if suffix == ".md":
            text = head.decode("utf-8", "replace")
            return text.startswith("|") or text.startswith("# Hypothesis verdicts")
        if suffix == ".html":
            text = path.read_text(errors="replace")
            return "hkd-table" in text or "hkd-overview" in text
        if suffix == ".pt":
            with zipfile.ZipFile(path) as archive:  # torch.save's format: a zip holding data.pkl
                return any(n.endswith("/data.pkl") or n == "data.pkl" for n in archive.namelist())
        if suffix == ".h5":
            return head.startswith(b"\x89HDF\r\n\x1a\n")
        if suffix == ".png":
            return head.startswith(b"\x89PNG\r\n\x1a\n")
        name = path.name.lower()
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            return any(b'"hkd_predict"' in ext.get_content() for ext in nib.load(path).header.extensions)
        if suffix == ".npz":
            with zipfile.ZipFile(path) as archive:
                return set(archive.namelist()) == {"probabilities.npy", "classes.npy"}
        if suffix == ".onnx":
            return b"hkd.preprocessing" in path.read_bytes()
    except Exception:  # noqa: BLE001: whatever a reader raises, the file is not one hkd wrote
        return False
    return False


def check_replaceable(path: str | os.PathLike) -> None:
    """Raise unless ``path`` is absent, an empty folder, a folder hkd created, or a file hkd wrote (or one
    in a folder hkd created)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        if is_marked(path) or not any(path.iterdir()):
            return
        raise InputOverwriteError(f"{path} exists and is not an earlier output of hkd (no {OUTPUT_MARKER}); "
                                  "refusing to replace it: remove it yourself or choose another output path")
    if path.is_file() and not path.is_symlink() and (written_by_hkd(path) or is_marked(path.parent)):
        return
    raise InputOverwriteError(f"{path} exists and is not a file hkd wrote (not a {path.suffix or 'suffix-less'} "
                              "file of hkd's form); refusing to replace it: remove it yourself or choose another "
                              "output path")


def is_marked(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` carries :data:`OUTPUT_MARKER` as hkd writes it (a plain file with hkd's text)."""
    marker = Path(folder) / OUTPUT_MARKER
    try:
        return marker.is_file() and not marker.is_symlink() and marker.read_text() == _MARKER_TEXT
    except (OSError, UnicodeDecodeError):
        return False


def mark_own(folder: str | os.PathLike) -> None:
    """Put :data:`OUTPUT_MARKER` into ``folder``: hkd created it and may replace or delete it."""
    (Path(folder) / OUTPUT_MARKER).write_text(_MARKER_TEXT)


def claim_folder(folder: str | os.PathLike, flag: str, create: bool = True) -> Path:
    """Create ``folder`` for hkd's own use, or take it over when it is empty or already hkd's (marked);
    otherwise refuse, naming ``flag`` and saying how to reuse it. With ``create`` the folder is made and
    marked as hkd's (a folder that cannot be written is an error naming ``flag``); without, only checked."""
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        kind = "a symbolic link" if folder.is_symlink() else "a file"
        raise InputOverwriteError(f"{flag} {folder} is {kind}, not a folder; choose a new or empty folder "
                                  "(nothing was written)")
    if folder.is_dir() and not is_marked(folder):
        foreign = sorted(p.name for p in folder.iterdir())
        if foreign:
            raise InputOverwriteError(
                f"{flag} {folder} holds files hkd did not write ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}) and no {OUTPUT_MARKER} marker, so hkd replaces or deletes "
                "nothing in it; to reuse it, move those files elsewhere, or choose a new or empty folder "
                "(nothing was written)")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not is_marked(folder):
                mark_own(folder)
        except OSError as exc:
            raise OSError(f"{flag} {folder}: cannot write there ({exc.strerror or exc}); choose a folder you can "
                          "write to (nothing was written)") from None
    return folder


def remove_own_tree(folder: str | os.PathLike) -> None:
    """Delete ``folder`` with everything in it, only when it carries :data:`OUTPUT_MARKER`."""
    folder = Path(folder)
    check_replaceable(folder)
    if folder.exists():
        shutil.rmtree(folder)
