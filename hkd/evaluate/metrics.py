"""Segmentation metrics: Dice, IoU, VOE, RVD and HD95 per organ (or tumour).

VOE (volumetric overlap error) is 1 - IoU; RVD (relative volume difference) is the signed
``(|A| - |B|) / |B|`` of prediction A and ground truth B (MedPy's ``ravd``): negative when the
prediction is too small. Both are reported per case as in the LiTS and HLFD papers.

All surface-distance values are numerically identical to MedPy 0.5's
``medpy.metric.binary.hd95`` (default ``connectivity=1``) on the full volume;
they are computed on a cropped bounding box, which is much faster.

MedPy's HD95 definition (reproduced here): the surface of a mask is the mask
minus its binary erosion (face-connected structuring element, voxels outside the
array count as background). The directed distances from every surface voxel of
A to the nearest surface voxel of B, and from B to A, are pooled into one array,
and HD95 is the 95th percentile (``numpy.percentile``, linear interpolation) of
that pooled array. Note that this is not the maximum of the two directed 95th
percentiles.

Empty-mask convention of :func:`case_metrics` (TransUNet's
``calculate_metric_percase``), with the value of the ``empty`` column:

- both masks non-empty (``"neither"``): metrics computed;
- prediction non-empty, ground truth empty (``"gt_empty"``): dice 1, iou 1, hd95 0;
- prediction empty, ground truth non-empty (``"pred_empty"``): dice 0, iou 0, hd95 0;
- both empty (``"both_empty"``): dice 0, iou 0, hd95 0 (TransUNet's rule, kept as is).

IoU follows Dice in every empty case and VOE is 1 - IoU; RVD is -1 for an empty prediction and
undefined (NaN) where the ground truth is empty. both HD95 columns (mm and voxels) are 0. That 0 is
TransUNet's bookkeeping, not a distance: the study tables leave HD95 of an empty mask out of
their means and count the empty predictions instead (see :mod:`hkd.evaluate.tables`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.ndimage import (
    binary_erosion,
    distance_transform_edt,
    find_objects,
    generate_binary_structure,
)

__all__ = [
    "dice",
    "iou",
    "rvd",
    "hd95",
    "case_metrics",
    "reference_case_metrics",
    "EMPTY_FLAGS",
    "GT_PRESENT",
    "METRIC_COLUMNS",
    "CASE_ROW",
    "CALIBRATION_METRICS",
]

#: Values of the ``empty`` column of :func:`case_metrics`.
EMPTY_FLAGS = ("neither", "gt_empty", "pred_empty", "both_empty")
#: Flags of the (case, organ) pairs whose ground truth holds the organ: the pairs Dice is averaged over.
GT_PRESENT = ("neither", "pred_empty")
#: Columns of every row returned by :func:`case_metrics`.
METRIC_COLUMNS = ("label", "organ", "dice", "iou", "voe", "rvd", "hd95_mm", "hd95_vox", "empty")
#: The ``organ`` of an evaluation row that holds a value of the whole case (calibration); its ``empty`` is n/a.
CASE_ROW = "all classes"
#: Per case (:mod:`hkd.evaluate.calibration`): the ECE and Brier score over all pixels and around the organs
#: (``_region``), before and after temperature scaling (``_ts``), and the temperature; then the region's
#: reliability bins as ``reliability_BB_count``, ``_confidence``, ``_correct`` (sums over pixels).
CALIBRATION_METRICS = ("ece", "ece_region", "brier", "brier_region", "ece_ts", "ece_region_ts", "brier_ts",
                       "brier_region_ts", "temperature")

_CONNECTIVITY = 1  # MedPy's default, used by TransUNet


def _as_bool(a) -> np.ndarray:
    return np.atleast_1d(np.asarray(a).astype(bool, copy=False))


def _normalize_spacing(spacing, ndim: int) -> np.ndarray | None:
    if spacing is None:
        return None
    s = np.asarray(spacing, dtype=np.float64)
    if s.ndim == 0:
        s = np.full(ndim, float(s))
    if s.shape != (ndim,):
        raise ValueError(f"spacing must have {ndim} values, got {tuple(np.shape(spacing))}")
    return np.ascontiguousarray(s)


# --------------------------------------------------------------------------- overlap
def dice(pred, gt) -> float:
    """Dice coefficient ``2|A∩B| / (|A|+|B|)``; 1.0 when both masks are empty (as MedPy's ``dc``)."""
    p, g = _as_bool(pred), _as_bool(gt)
    inter = np.count_nonzero(p & g)
    total = np.count_nonzero(p) + np.count_nonzero(g)
    return 1.0 if total == 0 else 2.0 * inter / float(total)


def iou(pred, gt) -> float:
    """Intersection over union (Jaccard); 1.0 when both masks are empty (as MedPy's ``jc``)."""
    p, g = _as_bool(pred), _as_bool(gt)
    inter = np.count_nonzero(p & g)
    union = np.count_nonzero(p | g)
    return 1.0 if union == 0 else float(inter) / float(union)


def rvd(pred, gt) -> float:
    """Relative volume difference ``(|A| - |B|) / |B|`` (signed, as MedPy's ``ravd``); NaN when B is empty."""
    n_p, n_g = np.count_nonzero(_as_bool(pred)), np.count_nonzero(_as_bool(gt))
    return float("nan") if n_g == 0 else (n_p - n_g) / float(n_g)


# --------------------------------------------------------------------------- surfaces
_FOOTPRINTS: dict[int, np.ndarray] = {}


def _footprint(ndim: int) -> np.ndarray:
    if ndim not in _FOOTPRINTS:
        _FOOTPRINTS[ndim] = generate_binary_structure(ndim, _CONNECTIVITY)
    return _FOOTPRINTS[ndim]


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask ^ binary_erosion(mask, structure=_footprint(mask.ndim), iterations=1)


def _distances_at(target_surface: np.ndarray, points: tuple, sampling) -> np.ndarray:
    """Distance from each voxel in ``points`` to the nearest voxel of ``target_surface``.

    Uses the same feature transform and the same floating-point operations, in the
    same order, as ``scipy.ndimage.distance_transform_edt`` (the dense distance map
    is never built: only the rows needed are evaluated).
    """
    ft = distance_transform_edt(
        ~target_surface, sampling=sampling, return_distances=False, return_indices=True
    )
    sq = None
    for axis, idx in enumerate(points):
        d = (ft[axis][points] - idx).astype(np.float64)
        if sampling is not None:
            d *= sampling[axis]
        d *= d
        sq = d if sq is None else sq + d
    return np.sqrt(sq)


def _hd95_from_surfaces(sa: np.ndarray, sb: np.ndarray, pa: tuple, pb: tuple, sampling) -> float:
    d_ab = _distances_at(sb, pa, sampling)
    d_ba = _distances_at(sa, pb, sampling)
    return float(np.percentile(np.hstack((d_ab, d_ba)), 95))


def _union_box(boxes: Sequence, shape: tuple[int, ...], pad: int = 1) -> tuple[slice, ...]:
    """Union of bounding boxes (``None`` entries ignored), padded and clipped to ``shape``."""
    boxes = [b for b in boxes if b is not None]
    out = []
    for axis, n in enumerate(shape):
        lo = min(b[axis].start for b in boxes)
        hi = max(b[axis].stop for b in boxes)
        out.append(slice(max(lo - pad, 0), min(hi + pad, n)))
    return tuple(out)


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    if not mask.any():
        return None
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        nz = np.flatnonzero(mask.any(axis=other) if other else mask)
        out.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(out)


def _hd95_pair(p: np.ndarray, g: np.ndarray, samplings: Sequence) -> list[float]:
    """HD95 of two non-empty cropped masks for each sampling in ``samplings``."""
    sp, sg = _surface(p), _surface(g)
    pp, pg = np.nonzero(sp), np.nonzero(sg)
    return [_hd95_from_surfaces(sp, sg, pp, pg, s) for s in samplings]


def hd95(pred, gt, spacing=None) -> float:
    """95th percentile symmetric Hausdorff distance, identical to MedPy's ``hd95``.

    ``spacing`` is one value per array axis (same order as the axes) or a scalar;
    ``None`` means unit spacing (result in voxels). Raises ``ValueError`` if either
    mask is empty.
    """
    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: {p.shape} vs {g.shape}")
    bp, bg = _bbox(p), _bbox(g)
    if bp is None or bg is None:
        raise ValueError("hd95 is undefined when a mask is empty")
    box = _union_box([bp, bg], p.shape)
    return _hd95_pair(p[box], g[box], [_normalize_spacing(spacing, p.ndim)])[0]


# --------------------------------------------------------------------------- per case
def _empty_row(label: int, organ: str, flag: str) -> dict:
    score = 1.0 if flag == "gt_empty" else 0.0
    return {
        "label": int(label),
        "organ": organ,
        "dice": score,
        "iou": score,
        "voe": 1.0 - score,
        "rvd": -1.0 if flag == "pred_empty" else float("nan"),
        "hd95_mm": 0.0,
        "hd95_vox": 0.0,
        "empty": flag,
    }


def _flag(n_pred: int, n_gt: int) -> str:
    if n_pred > 0 and n_gt > 0:
        return "neither"
    if n_pred > 0:
        return "gt_empty"
    return "pred_empty" if n_gt > 0 else "both_empty"


def _check_case(pred_labels, gt_labels, spacing, classes):
    pred_labels = np.asarray(pred_labels)
    gt_labels = np.asarray(gt_labels)
    if pred_labels.shape != gt_labels.shape:
        raise ValueError(f"shape mismatch: {pred_labels.shape} vs {gt_labels.shape}")
    if not np.issubdtype(pred_labels.dtype, np.integer) or not np.issubdtype(
        gt_labels.dtype, np.integer
    ):
        raise TypeError("label maps must have an integer dtype")
    if any(int(k) <= 0 for k in classes):
        raise ValueError("class ids must be positive (0 is background)")
    return pred_labels, gt_labels, _normalize_spacing(spacing, pred_labels.ndim)


def case_metrics(
    pred_labels,
    gt_labels,
    spacing: Sequence[float],
    classes: Mapping[int, str],
) -> list[dict]:
    """Per-organ Dice, IoU, VOE, RVD and HD95 of one case, with TransUNet's empty-mask convention.

    ``pred_labels`` and ``gt_labels`` are integer label maps of the same shape
    (e.g. ``(D, H, W)``); ``spacing`` gives the voxel size along the same axes, in mm.
    ``classes`` maps label id -> organ name. Returns one dict per organ (in the order
    of ``classes``) with the keys of :data:`METRIC_COLUMNS`: ``hd95_mm`` uses
    ``spacing``, ``hd95_vox`` unit spacing (as TransUNet reports). See the module
    docstring for the ``empty`` flag. Values equal :func:`reference_case_metrics`.
    """
    pred_labels, gt_labels, sampling = _check_case(pred_labels, gt_labels, spacing, classes)
    max_label = max((int(k) for k in classes), default=0)
    # one pass per volume for all bounding boxes
    boxes_p = find_objects(pred_labels, max_label=max_label) if max_label else []
    boxes_g = find_objects(gt_labels, max_label=max_label) if max_label else []
    rows = []
    for label, organ in classes.items():
        k = int(label)
        bp, bg = boxes_p[k - 1], boxes_g[k - 1]
        if bp is None and bg is None:
            rows.append(_empty_row(k, organ, "both_empty"))
            continue
        box = _union_box([bp, bg], pred_labels.shape)
        p = pred_labels[box] == k
        g = gt_labels[box] == k
        n_p, n_g = np.count_nonzero(p), np.count_nonzero(g)
        flag = _flag(n_p, n_g)
        if flag != "neither":
            rows.append(_empty_row(k, organ, flag))
            continue
        inter = np.count_nonzero(p & g)
        hd_mm, hd_vox = _hd95_pair(p, g, [sampling, None])
        jaccard = float(inter) / float(n_p + n_g - inter)
        rows.append(
            {
                "label": k,
                "organ": organ,
                "dice": 2.0 * inter / float(n_p + n_g),
                "iou": jaccard,
                "voe": 1.0 - jaccard,
                "rvd": (n_p - n_g) / float(n_g),
                "hd95_mm": hd_mm,
                "hd95_vox": hd_vox,
                "empty": flag,
            }
        )
    return rows


def reference_case_metrics(
    pred_labels,
    gt_labels,
    spacing: Sequence[float],
    classes: Mapping[int, str],
) -> list[dict]:
    """Straightforward per-organ loop with MedPy on the full volume (TransUNet style).

    Same inputs and output as :func:`case_metrics`; slow, used as ground truth in
    tests and benchmarks.
    """
    from medpy.metric import binary as mb

    pred_labels, gt_labels, sampling = _check_case(pred_labels, gt_labels, spacing, classes)
    rows = []
    for label, organ in classes.items():
        k = int(label)
        p = pred_labels == k
        g = gt_labels == k
        flag = _flag(int(p.sum()), int(g.sum()))
        if flag != "neither":
            rows.append(_empty_row(k, organ, flag))
            continue
        rows.append(
            {
                "label": k,
                "organ": organ,
                "dice": float(mb.dc(p, g)),
                "iou": float(mb.jc(p, g)),
                "voe": 1.0 - float(mb.jc(p, g)),
                "rvd": float(mb.ravd(p, g)),
                "hd95_mm": float(mb.hd95(p, g, voxelspacing=sampling)),
                "hd95_vox": float(mb.hd95(p, g)),
                "empty": flag,
            }
        )
    return rows
