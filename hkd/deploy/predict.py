"""``hkd predict``: segment CT scans (NIfTI) with a trained model, each on its own grid.

A scan goes in through ingest's own code (:func:`hkd.data.nifti.load_scan`: the same validation, and the
same reorientation to the display orientation, as the study's cases), is windowed, padded to square and
resized exactly as the model's training slices were (the checkpoint's :mod:`~hkd.infer.preprocessing`),
and comes out as a uint8 label volume with the input's shape, affine and header, in the input's voxel order.

Back on the native grid, by default the class *probabilities* (softmax of the logits) are resized to the
scan's in-plane size (bilinear) and arg-maxed there. A label map resized by nearest neighbour can only
change class at the model's pixel edges, so at 48 or 224 px against 512 px it draws organs as staircases a
model pixel wide; interpolated probabilities put each boundary where the classes' probabilities cross,
between model pixels, and small or thin organs keep their shape (nnU-Net resamples probabilities too).
``upsample="nearest"`` resizes the arg-max label map by nearest neighbour instead, as ``hkd evaluate`` and
TransUNet do: both run :func:`hkd.infer.segment.segment_volume`, so predict then reproduces the evaluation's
predictions voxel for voxel. Test-time augmentation (``tta``) is described there.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from tqdm import tqdm

from hkd.data.nifti import from_display, load_scan
from hkd.data.scans import case_name, folder_scans, is_nifti_name
from hkd.infer.grid import windowed
from hkd.infer.runtime import Model
from hkd.infer.segment import ProbabilityMaps, segment_volume
from hkd.errors import DataError
from hkd.guard import check_outputs_spare_inputs, check_replaceable
from hkd.io import atomic_path
from hkd.record import make_folder

log = logging.getLogger("hkd")

# Slices per step. A 512 x 512 x 100 volume with the 0.4M student in ONNX Runtime on one thread
# (benchmarks/predict.py): 16 slices 4.26 s and 2.1 GB peak (the network's activations), 4 slices 3.79 s and
# 1.0 GB, 1 slice 5.00 s and 0.74 GB (the steps' overhead).
BATCH = 4
#: The JSON that :func:`write_case` puts into the output's NIfTI header extension (and its key).
EXTENSION_KEY = "hkd_predict"


def segment(model: Model, image: np.ndarray, *, upsample: str = "probabilities", tta: bool = False,
            batch_size: int = BATCH, probabilities: bool = False,
            in_place: bool = False) -> tuple[np.ndarray, ProbabilityMaps | None]:
    """Labels (D, H, W) uint8 of a display-oriented HU volume (D, H, W), and with ``probabilities`` the
    class probabilities (resized bilinearly onto the same grid in either mode). ``in_place``: window the
    caller's float32 ``image`` itself (it is not used after)."""
    prep = model.preprocessing
    return segment_volume(model.run, windowed(image, prep, copy=not in_place), int(prep["image_size"]),
                          tuple(prep["scale"]), upsample=upsample, tta=tta, batch_size=batch_size,
                          probability_maps=probabilities)


def statistics(labels: np.ndarray, affine: np.ndarray, classes: list[str]) -> dict:
    """Voxel count and volume (mm^3) of each class but the background."""
    voxel = float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))
    flat = torch.from_numpy(np.ascontiguousarray(labels)).view(-1)
    counts = flat.bincount(minlength=len(classes)).numpy()  # 4x faster than numpy's on uint8
    return {"voxel_volume_mm3": voxel,
            "classes": {name: {"label": i, "voxels": int(counts[i]), "volume_mm3": float(counts[i]) * voxel}
                        for i, name in enumerate(classes) if i > 0}}


def segmentation_image(labels: np.ndarray, source: nib.Nifti1Image, info: dict) -> nib.Nifti1Image:
    """``labels`` (the source's voxel order) as a uint8 NIfTI with the source's header and affine, the
    class names and the model in a header extension."""
    header = source.header.copy()
    out = type(source)(np.asarray(labels, dtype=np.uint8), source.affine, header=header)
    out.set_data_dtype(np.uint8)
    out.header.set_slope_inter(1.0, 0.0)
    out.header["cal_min"], out.header["cal_max"] = 0, len(info["classes"]) - 1
    out.set_qform(source.get_qform(), code=int(source.header["qform_code"]))
    out.set_sform(source.get_sform(), code=int(source.header["sform_code"]))
    out.header["descrip"] = b"hkd predict: class names in the header extension"
    text = json.dumps({EXTENSION_KEY: info}).encode()
    out.header.extensions.append(nib.nifti1.Nifti1Extension("comment", text))
    return out


def _nifti_suffix(path: Path) -> str:
    return ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"


def output_paths(out: Path, probabilities: bool) -> dict[str, Path]:
    """The files of one case: the segmentation ``out``, its statistics and (optionally) probabilities."""
    stem = out.parent / case_name(out)
    paths = {"segmentation": out, "statistics": stem.with_name(stem.name + ".json")}
    if probabilities:
        paths["probabilities"] = stem.with_name(stem.name + "_probabilities.npz")
    return paths


def predict_file(model: Model, source: Path, out: Path, *, upsample: str = "probabilities", tta: bool = False,
                 probabilities: bool = False, batch_size: int = BATCH) -> dict:
    """Segment one NIfTI scan into ``out`` (.nii or .nii.gz), with ``<case>.json`` beside it (and
    ``<case>_probabilities.npz``); every file appears complete or not at all. Returns the statistics."""
    if not is_nifti_name(out):
        raise DataError(f"--out {out}: a segmentation is written as .nii or .nii.gz")
    nii, image = load_scan(source)
    warn_unusual(source, nii, image)
    labels, probs = segment(model, image, upsample=upsample, tta=tta, batch_size=batch_size,
                            probabilities=probabilities, in_place=True)
    del image
    counts = statistics(labels, nii.affine, model.classes)  # the display order's counts are the scan's
    labels = from_display(labels, nii.affine)  # a view; nibabel writes it in the file's own (column-major) order
    classes = model.classes
    info = {"classes": {str(i): name for i, name in enumerate(classes)}, "model": str(model.path),
            "runtime": model.runtime, "precision": model.precision, "upsample": upsample, "tta": tta}
    paths = output_paths(out, probabilities)
    stats = {"case": case_name(source), "input": str(source), "segmentation": str(out), **info,
             "shape": list(labels.shape), **counts}
    image_out = segmentation_image(labels, nii, info)
    with contextlib.ExitStack() as stack:  # all files renamed into place only when all are written
        tmp = {k: stack.enter_context(atomic_path(p, suffix=_nifti_suffix(p) if k == "segmentation" else ""))
               for k, p in paths.items()}
        nib.save(image_out, tmp["segmentation"])
        written = nib.load(tmp["segmentation"])
        if written.shape != nii.shape or not np.allclose(written.affine, nii.affine, rtol=0, atol=1e-6):
            raise RuntimeError(f"{out}: written with shape {written.shape} and affine {written.affine.tolist()}, "
                               f"not the input's {nii.shape} and {nii.affine.tolist()}")
        tmp["statistics"].write_text(json.dumps(stats, indent=2) + "\n")
        if probabilities:
            write_probabilities(tmp["probabilities"], probs, nii.affine, classes)
    return stats


def write_probabilities(path: Path, maps: ProbabilityMaps, affine: np.ndarray, classes: list[str]) -> None:
    """``<case>_probabilities.npz`` (``np.load`` reads it): ``probabilities`` (C, *scan shape) float16 in the
    scan's voxel order, and ``classes``. The class axis comes first, so each class is one block of the file:
    written class by class as it is resized, never all at once. Deflate level 1: ``np.savez_compressed``
    takes zipfile's 6, 24.6 s for a 512 x 512 x 100 scan's maps against 10.7 s (benchmarks/predict.py)."""
    import zipfile

    first = from_display(maps.resized(0), affine)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False,
              "shape": (maps.classes, *first.shape)}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("probabilities.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            for c in range(maps.classes):
                block = first if c == 0 else from_display(maps.resized(c), affine)
                member.write(np.ascontiguousarray(block).reshape(-1).view(np.uint8).data)
                first = None
        with archive.open("classes.npy", "w") as member:
            np.lib.format.write_array(member, np.array(classes), allow_pickle=False)


CT_AIR_HU = -500  # a CT scan holds air (about -1000 HU) around or inside the body
ANISOTROPY = 3.0  # in-plane pixels longer than this many times their width are not a CT slice's


def warn_unusual(source: Path, nii: nib.Nifti1Image, image: np.ndarray) -> None:
    """One warning line for a scan that may not be what the model was trained on: no voxel below -500 HU
    (an MRI, a label map, an image already scaled), or pixels more than 3x longer than wide in-plane."""
    if float(image.min()) > CT_AIR_HU:
        log.warning("%s: no voxel below %d HU (lowest %g): it does not look like CT (MRI, a label map, or already "
                    "scaled?); its segmentation may mean nothing", source, CT_AIR_HU, float(image.min()))
    zooms = [float(z) for z in nii.header.get_zooms()[:3]]
    in_plane = sorted(zooms[:2]) if len(zooms) >= 2 else []
    if in_plane and in_plane[0] > 0 and in_plane[1] / in_plane[0] > ANISOTROPY:
        log.warning("%s: in-plane pixels of %g x %g mm (%.1fx longer than wide): the model was trained on square "
                    "pixels; resample the scan first", source, *zooms[:2], in_plane[1] / in_plane[0])


def input_files(source: Path) -> list[Path]:
    """The scans of ``--input``: the file itself, or a folder's .nii/.nii.gz files (not hidden, sorted)."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise DataError(f"--input {source}: no such file or folder")
    return list(folder_scans(source).values())


def check_classes(model: Model, wanted: list[str] | None) -> None:
    """Refuse a model whose classes differ from those the user asked for (``--classes``)."""
    if wanted is not None and list(wanted) != list(model.classes):
        raise DataError(f"--classes: the model {model.path} segments {model.classes}, not {list(wanted)}")


def predict(model: Model, source: Path, out: Path, *, progress: bool = True, inputs: dict | None = None,
            **options) -> tuple[list, list]:
    """Segment ``source`` (a scan or a folder of scans) into ``out`` (a file, or a folder for a folder).

    Before any work, every file it would write is checked: none may be, contain or lie inside one of the
    command's ``inputs`` (flag -> path), and an existing one must be hkd's (:mod:`hkd.guard`). A case that
    fails is logged by name and skipped; the others are written. Returns (the statistics of the cases
    written, the (case file, error) of those that failed).
    """
    files = input_files(source)
    if source.is_dir() or out.is_dir():
        if out.exists() and not out.is_dir():
            raise DataError(f"--out {out}: a file; a folder of scans is segmented into a folder")
        targets = [out / (case_name(f) + ".nii.gz") for f in files]
    else:
        targets = [out]
    written = {f"--out ({kind} of {dst.name})": path for dst in targets
               for kind, path in output_paths(dst, options.get("probabilities", False)).items()}
    check_outputs_spare_inputs(written, inputs or {})
    for path in written.values():  # never replace a file hkd did not write
        check_replaceable(path)
    if source.is_dir() or out.is_dir():
        make_folder(out)
    done, failed = [], []
    bar = tqdm(list(zip(files, targets)), desc="predict", unit="case", disable=not progress or len(files) == 1)
    for src, dst in bar:
        try:
            done.append(predict_file(model, src, dst, **options))
        except Exception as exc:  # noqa: BLE001: a bad case is named and skipped, the others finish
            if len(files) == 1:
                raise
            message = " ".join(str(exc).split()) or type(exc).__name__
            log.error("%s: skipped (%s)", src, message)
            failed.append((src, message))
    return done, failed
