"""Tests for hkd.evaluate.metrics."""

import math

import numpy as np
import pytest
from medpy.metric import binary as mb
from scipy.ndimage import gaussian_filter

from hkd.evaluate.metrics import (
    EMPTY_FLAGS,
    GT_PRESENT,
    METRIC_COLUMNS,
    case_metrics,
    dice,
    hd95,
    iou,
    reference_case_metrics,
    rvd,
)

ANISO = (2.5, 0.7, 0.83)
TOL = 1e-9


def cube(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def blob(shape, seed, sigma=2.5, thr=0.08):
    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.normal(size=shape), sigma) > thr


def brute_hd95(a, b, spacing=None):
    """HD95 from the definition: pooled surface-to-surface distances, 95th percentile."""
    spacing = np.ones(a.ndim) if spacing is None else np.asarray(spacing, float)

    def surface_points(m):
        pad = np.pad(m, 1)
        inner = np.ones_like(m)
        for ax in range(m.ndim):
            for step in (-1, 1):
                inner &= np.roll(pad, step, axis=ax)[(slice(1, -1),) * m.ndim]
        return np.argwhere(m & ~inner) * spacing

    pa, pb = surface_points(a), surface_points(b)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return float(np.percentile(np.hstack((d.min(1), d.min(0))), 95))


# --------------------------------------------------------------------------- hand-made
def test_offset_cubes_dice_iou():
    gt = cube((32, 32, 32), (10, 10, 10), (20, 20, 20))
    pred = cube((32, 32, 32), (12, 10, 10), (22, 20, 20))
    assert dice(pred, gt) == pytest.approx(0.8)
    assert iou(pred, gt) == pytest.approx(2 / 3)
    assert hd95(pred, gt) == pytest.approx(brute_hd95(pred, gt), abs=TOL)


def test_identical_masks():
    m = cube((20, 20, 20), (3, 4, 5), (15, 12, 9))
    assert dice(m, m) == 1.0 and iou(m, m) == 1.0 and hd95(m, m, ANISO) == 0.0


def test_parallel_plates_known_hd95_and_spacing():
    # one-voxel-thick plates t slices apart: every surface distance is t slices
    shape, t = (20, 16, 16), 4
    gt = cube(shape, (5, 2, 2), (6, 14, 14))
    pred = cube(shape, (5 + t, 2, 2), (6 + t, 14, 14))
    assert hd95(pred, gt) == pytest.approx(t, abs=TOL)
    assert hd95(pred, gt, spacing=ANISO) == pytest.approx(t * ANISO[0], abs=TOL)
    # same plates moved along an in-plane axis instead: mm value follows that axis
    pred_y = cube(shape, (5, 2 + t, 2), (6, 14 + t, 14))
    mixed = hd95(pred_y, gt, spacing=ANISO)
    assert mixed == pytest.approx(brute_hd95(pred_y, gt, ANISO), abs=TOL)
    assert dice(pred, gt) == 0.0


def test_single_voxels_known_distance():
    shape = (12, 12, 12)
    a = np.zeros(shape, bool)
    b = np.zeros(shape, bool)
    a[2, 2, 2] = True
    b[5, 6, 2] = True
    assert hd95(a, b) == pytest.approx(5.0, abs=TOL)
    assert hd95(a, b, spacing=(2.0, 1.0, 1.0)) == pytest.approx(math.sqrt(52.0), abs=TOL)
    assert hd95(a, b, spacing=0.5) == pytest.approx(2.5, abs=TOL)
    assert dice(a, b) == 0.0 and iou(a, b) == 0.0


def test_nested_cubes_match_brute_force():
    gt = cube((24, 24, 24), (5, 5, 5), (16, 16, 16))
    pred = cube((24, 24, 24), (7, 7, 7), (14, 14, 14))
    assert dice(pred, gt) == pytest.approx(2 * 343 / (343 + 1331))
    assert iou(pred, gt) == pytest.approx(343 / 1331)
    for sp in (None, ANISO):
        assert hd95(pred, gt, sp) == pytest.approx(brute_hd95(pred, gt, sp), abs=TOL)


def test_hd95_is_symmetric_and_2d():
    a = blob((40, 40), 1)
    b = blob((40, 40), 2)
    assert hd95(a, b, (0.5, 1.5)) == hd95(b, a, (0.5, 1.5))
    assert hd95(a, b) == pytest.approx(mb.hd95(a, b), abs=TOL)


def test_overlap_of_empty_masks_and_hd95_errors():
    z = np.zeros((5, 5, 5), bool)
    m = z.copy()
    m[2, 2, 2] = True
    assert dice(z, z) == 1.0 and iou(z, z) == 1.0  # plain definition, as MedPy
    assert dice(m, z) == 0.0 and iou(z, m) == 0.0
    with pytest.raises(ValueError):
        hd95(m, z)
    with pytest.raises(ValueError):
        hd95(z, m)
    with pytest.raises(ValueError):
        hd95(m, m, spacing=(1.0, 2.0))


# --------------------------------------------------------------------------- vs medpy
@pytest.mark.parametrize("seed", range(5))
def test_binary_metrics_equal_medpy_on_random_blobs(seed):
    shape = (22, 36, 30)
    a = blob(shape, seed)
    b = blob(shape, seed + 100)
    assert dice(a, b) == pytest.approx(mb.dc(a, b), abs=TOL)
    assert iou(a, b) == pytest.approx(mb.jc(a, b), abs=TOL)
    assert hd95(a, b) == pytest.approx(mb.hd95(a, b), abs=TOL)
    assert hd95(a, b, ANISO) == pytest.approx(mb.hd95(a, b, voxelspacing=ANISO), abs=TOL)


def test_small_blob_inside_large_volume_equals_medpy():
    # the crop must not change erosion or distances, including at the array border
    shape = (30, 60, 60)
    a = np.zeros(shape, bool)
    b = np.zeros(shape, bool)
    a[:8, 40:, 45:] = blob((8, 20, 15), 7, sigma=1.5, thr=-0.05)
    b[:10, 38:, 47:] = blob((10, 22, 13), 8, sigma=1.5, thr=-0.05)
    for sp in (None, ANISO):
        assert hd95(a, b, sp) == pytest.approx(mb.hd95(a, b, voxelspacing=sp), abs=TOL)


def random_case(seed, shape=(20, 40, 36), n_labels=5):
    """Label maps built from random blobs, with one gt-empty, one pred-empty organ."""
    rng = np.random.default_rng(seed)
    gt = np.zeros(shape, np.int16)
    pred = np.zeros(shape, np.int16)
    for k in range(1, n_labels + 1):
        field = gaussian_filter(rng.normal(size=shape), 2.0)
        thr = np.quantile(field, 0.93)
        gt[field > thr] = k
        noisy = field + 0.4 * gaussian_filter(rng.normal(size=shape), 1.5)
        pred[noisy > thr] = k
    pred[pred == 2] = 0  # organ 2: prediction empty
    gt[gt == 3] = 0  # organ 3: ground truth empty
    return pred, gt


CLASSES = {1: "spleen", 2: "kidney_r", 3: "kidney_l", 4: "liver", 5: "stomach", 7: "absent"}


@pytest.mark.parametrize("seed", range(4))
def test_case_metrics_equal_reference(seed):
    pred, gt = random_case(seed)
    fast = case_metrics(pred, gt, ANISO, CLASSES)
    ref = reference_case_metrics(pred, gt, ANISO, CLASSES)
    assert [r["label"] for r in fast] == list(CLASSES)
    for f, r in zip(fast, ref):
        assert set(f) == set(METRIC_COLUMNS) == set(r)
        assert f["empty"] == r["empty"] and f["organ"] == r["organ"]
        for key in ("dice", "iou", "voe", "rvd", "hd95_mm", "hd95_vox"):
            assert f[key] == pytest.approx(r[key], abs=TOL, nan_ok=True), (f["label"], key)


def test_case_metrics_empty_conventions():
    pred, gt = random_case(11)
    rows = {r["label"]: r for r in case_metrics(pred, gt, ANISO, CLASSES)}
    assert {r["empty"] for r in rows.values()} <= set(EMPTY_FLAGS)
    expect = {
        2: ("pred_empty", 0.0),
        3: ("gt_empty", 1.0),
        7: ("both_empty", 0.0),
    }
    for k, (flag, score) in expect.items():
        r = rows[k]
        assert r["empty"] == flag
        assert r["dice"] == score and r["iou"] == score
        assert r["hd95_mm"] == 0.0 and r["hd95_vox"] == 0.0
        assert r["voe"] == 1.0 - score
        assert r["rvd"] == -1.0 if flag == "pred_empty" else np.isnan(r["rvd"])
    for k in (1, 4, 5):
        r = rows[k]
        assert r["empty"] == "neither"
        assert 0.0 < r["dice"] < 1.0 and r["iou"] < r["dice"]
        assert r["hd95_vox"] > 0.0 and r["hd95_mm"] > 0.0


def test_gt_present_flags_exactly_the_organs_in_the_ground_truth():
    pred, gt = random_case(11)
    for r in case_metrics(pred, gt, ANISO, CLASSES):
        assert (r["empty"] in GT_PRESENT) == bool((gt == r["label"]).any()), r


def test_case_metrics_known_cubes_and_mm():
    shape = (20, 30, 30)
    gt = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    gt[2:3, 5:25, 5:25] = 1  # plate
    pred[5:6, 5:25, 5:25] = 1  # same plate 3 slices higher
    gt[10:15, 10:20, 10:20] = 2
    pred[10:15, 10:20, 10:20] = 2
    rows = case_metrics(pred, gt, (3.0, 0.8, 0.8), {1: "a", 2: "b"})
    assert rows[0]["hd95_vox"] == pytest.approx(3.0) and rows[0]["hd95_mm"] == pytest.approx(9.0)
    assert rows[0]["dice"] == 0.0
    assert rows[1]["dice"] == 1.0 and rows[1]["iou"] == 1.0 and rows[1]["hd95_mm"] == 0.0


def test_case_metrics_input_checks():
    a = np.zeros((4, 4, 4), np.int16)
    with pytest.raises(ValueError):
        case_metrics(a, np.zeros((4, 4, 5), np.int16), (1, 1, 1), {1: "x"})
    with pytest.raises(TypeError):
        case_metrics(a.astype(float), a, (1, 1, 1), {1: "x"})
    with pytest.raises(ValueError):
        case_metrics(a, a, (1, 1), {1: "x"})
    with pytest.raises(ValueError):
        case_metrics(a, a, (1, 1, 1), {0: "background"})


def test_voe_and_rvd_of_known_volumes():
    """A tumour of 8 voxels predicted as 12 voxels, 4 of them inside: VOE 1 - 4/16, RVD +50%."""
    gt = np.zeros((4, 6, 6), np.uint8)
    pred = np.zeros_like(gt)
    gt[1:3, 1:3, 1:3] = 2
    pred[1:3, 1:4, 2:4] = 2
    (row,) = case_metrics(pred, gt, (2.0, 1.0, 1.0), {2: "tumour"})
    assert row["dice"] == pytest.approx(2 * 4 / 20) and row["voe"] == pytest.approx(1 - 4 / 16)
    assert row["rvd"] == pytest.approx((12 - 8) / 8)
    assert rvd(pred == 2, gt == 2) == pytest.approx(0.5) and np.isnan(rvd(gt, np.zeros_like(gt)))
