"""Reading and validating NIfTI volumes: the one place that turns image and label files into checked volumes.

Every reader of NIfTI cases (:mod:`hkd.data.readers`) and the segmentation of a new scan
(:mod:`hkd.deploy.predict`) load through here. A :class:`~hkd.data.case.Case` holds an image and its
label in the *display* orientation used everywhere in the project: axes (z, row, column), axial
slices with the patient's anterior at the top and the patient's right on the left of the image (the
radiological convention), superior at high z.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from hkd.data.case import Case, RawCase
from hkd.data.scans import is_nifti_name
from hkd.errors import DataError

# Voxels one case may declare: 2^30 (4 GiB as float32), eight times a 512 x 512 x 512 CT; a header beyond
# this is corrupt or not a CT, and reading it would exhaust the memory.
MAX_VOXELS = 2**30


def _load_nifti(path: Path) -> nib.Nifti1Image:
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises several types for corrupt headers
        raise DataError(f"{path}: not a readable NIfTI file ({exc})") from exc
    if len(img.shape) != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {img.shape}")
    if int(np.prod(img.shape, dtype=np.int64)) > MAX_VOXELS:
        raise DataError(f"{path}: header declares {' x '.join(map(str, img.shape))} voxels, more than the limit "
                        f"of {MAX_VOXELS:,} voxels per case (hkd.data.nifti.MAX_VOXELS); a corrupt header?")
    _check_geometry(img, path)
    return img


def _check_geometry(img: nib.Nifti1Image, path: Path) -> None:
    """Reject voxel geometry that would make distances in mm wrong or the orientation undefined."""
    # nibabel silently replaces a zero pixdim by 1 mm when it loads a header; read it as stored.
    try:
        with ImageOpener(path) as f:
            raw = type(img.header).from_fileobj(f, check=False)
    except Exception as exc:  # the same broad set nib.load itself can raise
        raise DataError(f"{path}: not a readable NIfTI header ({exc})") from exc
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise DataError(f"{path}: affine has non-finite entries {affine[:3].tolist()}")
    lengths = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    zero = [axis for axis, n in zip("ijk", lengths) if n < 1e-6]
    if zero:
        raise DataError(f"{path}: affine has a zero-length voxel axis ({', '.join(zero)}: spacing "
                        f"{lengths.round(6).tolist()} mm)")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9 * lengths.prod():
        raise DataError(f"{path}: affine axes are not independent (determinant 0), orientation undefined")
    # Whatever qform_code and sform_code say: nibabel builds a qform affine from a zero pixdim with 1 mm.
    pixdim = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    if not (np.isfinite(pixdim).all() and (pixdim != 0).all()):
        codes = f"qform_code {int(raw['qform_code'])}, sform_code {int(raw['sform_code'])}"
        raise DataError(f"{path}: voxel spacing (pixdim) {pixdim.tolist()} is zero or not finite ({codes}), so "
                        "distances in mm are unknown")


def _read_array(img: nib.Nifti1Image, path: Path, dtype) -> np.ndarray:
    """Read voxel data without a float64 copy; a truncated or corrupt file raises DataError."""
    try:
        if dtype is None:
            return np.asanyarray(img.dataobj)
        return np.asarray(img.dataobj.get_unscaled() if _unscaled_ok(img) else img.dataobj, dtype=dtype)
    except (EOFError, OSError, zlib.error, ValueError) as exc:
        raise DataError(f"{path}: truncated or corrupt voxel data ({exc})") from exc


def _unscaled_ok(img: nib.Nifti1Image) -> bool:
    slope, inter = img.dataobj.slope, img.dataobj.inter
    return (slope in (1.0, None) or np.isnan(slope)) and (inter in (0.0, None) or np.isnan(inter))


def to_display(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorient a voxel array with ``affine`` to display axes (z, row, column); returns a view."""
    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(volume, ornt)  # axes point to R, A, S
    # rows run anterior -> posterior, columns patient right -> left, hence both flips.
    return np.transpose(ras[::-1, ::-1, :], (2, 1, 0))


def from_display(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_display`: a display-ordered array (z, row, column, ...) back in the voxel
    order of ``affine`` (trailing axes, e.g. classes, are kept); returns a view."""
    ras = np.swapaxes(volume, 0, 2)[::-1, ::-1]  # (R, A, S) with axes pointing to R, A, S
    ornt = nib.orientations.io_orientation(affine)
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    return nib.orientations.apply_orientation(ras, back)


def display_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing (mm) along the display axes (z, row, column)."""
    ornt = nib.orientations.io_orientation(affine)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    ras_zooms = [0.0, 0.0, 0.0]
    for axis, (world_axis, _) in enumerate(ornt):
        ras_zooms[int(world_axis)] = float(zooms[axis])
    return (ras_zooms[2], ras_zooms[1], ras_zooms[0])


def _check_voxels(image: np.ndarray, path: Path) -> None:
    """Reject NaN or infinite voxels and a constant image, naming ``path``."""
    bad = ~np.isfinite(image)
    if bad.any():
        kinds = ", ".join(str(v) for v in np.unique(image[bad]).tolist())
        raise DataError(f"{path}: contains NaN or infinite voxels ({int(bad.sum())} voxels: {kinds})")
    if image.min() == image.max():
        raise DataError(f"{path}: constant volume (every voxel is {image.min():g})")


def load_scan(path: str | Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Load and validate one image without a label (a scan to segment): its NIfTI image and its voxels
    (float32) in the display orientation. The checks are those of :func:`load_raw_case`."""
    path = Path(path)
    if not is_nifti_name(path):
        raise DataError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
    img = _load_nifti(path)
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"{path}: not a NIfTI file (read as {type(img).__name__})")
    dtype = img.get_data_dtype()
    if dtype.fields is not None or np.issubdtype(dtype, np.complexfloating):
        raise DataError(f"{path}: its voxels are {dtype} ({'RGB' if dtype.fields else 'complex'}), not one real "
                        "value each as in a CT scan")
    if len(img.shape) != 3 or min(img.shape) < 1:
        raise DataError(f"{path}: shape {tuple(img.shape)}; a scan to segment is one 3-D volume with at least one "
                        "slice")
    image = _read_array(img, path, np.float32)
    _check_voxels(image, path)
    return img, to_display(image, img.affine)


def load_raw_case(raw: RawCase) -> Case:
    """Load, validate and reorient one image/label pair.

    Raises :class:`DataError` naming the file for: unreadable or truncated files, shape or affine
    mismatch, zero or non-finite spacing, degenerate affines, NaN or infinite voxels, an empty or constant image, and non-integer label values.
    """
    img_nii, lab_nii = _load_nifti(raw.image_path), _load_nifti(raw.label_path)
    if img_nii.shape != lab_nii.shape:
        raise DataError(f"{raw.label_path}: shape {lab_nii.shape} does not match image {raw.image_path} "
                        f"shape {img_nii.shape}")
    if not np.allclose(img_nii.affine, lab_nii.affine, atol=1e-3):
        raise DataError(f"{raw.label_path}: affine does not match image {raw.image_path}")
    if min(img_nii.shape) < 1 or np.prod(img_nii.shape) == 0:
        raise DataError(f"{raw.image_path}: empty volume")
    image = _read_array(img_nii, raw.image_path, np.float32)
    _check_voxels(image, raw.image_path)
    label = _read_array(lab_nii, raw.label_path, None)
    if not np.issubdtype(label.dtype, np.integer):
        if np.isnan(label).any() or (label != np.round(label)).any():
            raise DataError(f"{raw.label_path}: label values must be integers")
    values = np.unique(label)
    if values.min() < 0 or values.max() > 255:
        raise DataError(f"{raw.label_path}: label values {values.tolist()} outside 0..255")
    label = label.astype(np.uint8, copy=False)
    return Case(raw.case_id, to_display(image, img_nii.affine), to_display(label, img_nii.affine),
                display_spacing(img_nii.affine), source=str(raw.label_path))


def depths(raws) -> dict[str, int]:
    """Case id -> number of axial slices of image/label pairs, from the headers (a reader's ``list_cases``)."""
    return {raw.case_id: raw_depth(raw) for raw in raws}


def load_cases(raws, case_ids: list[str]):
    """The validated cases ``case_ids`` of image/label pairs, one at a time (a reader's ``iter_cases``)."""
    wanted = set(case_ids)
    for raw in raws:
        if raw.case_id in wanted:
            yield load_raw_case(raw)


def raw_depth(raw: RawCase) -> int:
    """Number of axial slices of a raw case, read from the header only."""
    img = _load_nifti(raw.image_path)
    ornt = nib.orientations.io_orientation(img.affine)
    (axis,) = np.flatnonzero(ornt[:, 0] == 2)  # the voxel axis that runs inferior-superior
    return int(img.shape[axis])
