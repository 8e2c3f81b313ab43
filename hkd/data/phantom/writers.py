"""The phantom written as a dataset, in the layout of a data source (Synapse RawData, KiTS19, LiTS, nnU-Net raw),
under the file names that source's registry entry gives (:func:`hkd.data.sources.phantom_files`)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from hkd.data.nnunet_files import DESCRIPTION, description
from hkd.data.phantom.anatomy import LABEL_NAMES, TUMOUR_LABEL, generate_case
from hkd.data.phantom.shapes import uniform
from hkd.data.sources import check_phantom_tumours, phantom_files
from hkd.io import atomic_path, write_json

#: Where each layout's tumours grow (BTCV ids) and its label ids: source id -> layout id (others: 0).
LAYOUT_LABELS = {
    "kits19": {"organs": (2, 3), "labels": {2: 1, 3: 1, TUMOUR_LABEL: 2}},  # 1 kidney, 2 tumour
    "lits": {"organs": (6,), "labels": {6: 1, TUMOUR_LABEL: 2}},  # 1 liver, 2 tumour
}


# --------------------------------------------------------------------------------------------------
# Dataset writing


def case_geometry(index: int, seed: int, slices=(80, 120), spacing_xy=(0.7, 0.9),
                  slice_thickness=(2.5, 5.0)) -> tuple[int, float, float]:
    """Slice count, in-plane spacing and slice thickness of case ``index``, drawn from the ranges."""
    rng = np.random.default_rng([int(seed), int(index), 1])
    n = int(rng.integers(int(slices[0]), int(slices[1]) + 1))
    return n, round(uniform(rng, *spacing_xy), 4), round(uniform(rng, *slice_thickness), 2)


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path, suffix="".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix) as tmp:
        nib.save(img, tmp)


# KiTS19's voxel order: axis 0 runs inferior (the axial axis first), axis 1 posterior, axis 2 to the
# patient's left; its affine has no translation (the KiTS19 README's "unusual" convention).
def kits19_affine(spacing_xy: float, thickness: float) -> np.ndarray:
    """KiTS19's affine for in-plane spacing ``spacing_xy`` and slice thickness ``thickness`` (mm)."""
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = -spacing_xy, -spacing_xy, -thickness, 1.0
    return affine


def to_kits19(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A phantom volume (X, Y, Z in ``affine``'s LPS or RAS order) in KiTS19's order (:func:`kits19_affine`)."""
    ras = volume if nib.aff2axcodes(affine) == ("R", "A", "S") else volume[::-1, ::-1]
    return np.ascontiguousarray(ras[::-1, ::-1, ::-1].transpose(2, 1, 0))


def write_phantom_dataset(out_dir: str | os.PathLike, n_cases: int, seed: int, size: int = 512,
                          slices: tuple[int, int] = (80, 120), spacing_xy: tuple[float, float] = (0.7, 0.9),
                          slice_thickness: tuple[float, float] = (2.5, 5.0), layout: str = "synapse",
                          tumours: dict | None = None, scanner: dict | None = None) -> list[str]:
    """Write ``n_cases`` phantom cases; return the case ids the source readers will give them.

    ``layout`` 'synapse': ``out_dir/Training/img/imgNNNN.nii.gz`` (int16 HU) and
    ``out_dir/Training/label/labelNNNN.nii.gz`` (uint8 BTCV ids), cases alternating between LPS (even
    index) and RAS (odd index) voxel order; ids '0001', ... 'kits19': ``case_XXXXX/imaging.nii.gz`` and
    ``segmentation.nii.gz`` in KiTS19's voxel order and affine, labels 0 background, 1 kidney, 2 tumour;
    ids '00000', ... 'lits': ``volume-N.nii`` and ``segmentation-N.nii`` (LPS or RAS as above), labels 0
    background, 1 liver, 2 tumour; ids '000', ... 'nnunet': ``imagesTr/hkd_NNNN_0000.nii.gz`` and
    ``labelsTr/hkd_NNNN.nii.gz`` (BTCV ids) with ``dataset.json`` naming them; ids 'hkd_0000', ...

    ``tumours`` (options ``count``, ``radius_mm``, ``contrast_hu``, see :data:`TUMOUR_DEFAULTS`) places
    lesions in the layout's organ: the kidneys for kits19, the liver for lits; the Synapse layout has
    no tumour label. ``scanner`` (:data:`hkd.data.phantom.anatomy.SCANNER_DEFAULTS`' keys) acquires the cases
    on another scanner: more or less noise, another grain, contrast and HU offset.
    """
    check_phantom_tumours({"layout": layout, "tumours": tumours})
    out = Path(out_dir)
    spec = None if tumours is None else {**tumours, "organs": LAYOUT_LABELS[layout]["organs"]}
    ids = []
    for index in range(n_cases):
        n, sxy, th = case_geometry(index, seed, slices, spacing_xy, slice_thickness)
        image, label, affine = generate_case(index, seed, size, n, sxy, th, tumours=spec, scanner=scanner)
        if layout in LAYOUT_LABELS:
            table = np.zeros(256, np.uint8)
            for src, dst in LAYOUT_LABELS[layout]["labels"].items():
                table[src] = dst
            label = table[label]
        if layout == "kits19":
            image, label, affine = to_kits19(image, affine), to_kits19(label, affine), kits19_affine(sxy, th)
        case_id, image_path, label_path = phantom_files(layout, index)
        _save_nifti(out / image_path, image, affine)
        _save_nifti(out / label_path, label, affine)
        ids.append(case_id)
    if layout == "nnunet":  # the dataset's description, which its reader requires
        write_json(out / DESCRIPTION, description({name: i for i, name in LABEL_NAMES.items()}, n_cases))
    return ids
