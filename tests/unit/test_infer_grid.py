"""hkd.infer.grid: slices in as training made them, predictions back on the scan's grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hkd.data.preprocess import pad_to_square, resize_slices
from hkd.infer.grid import Grid, class_argmax, model_slices


def _probabilities(n: int, classes: int, size: int, seed: int, blobs: int) -> torch.Tensor:
    """Softmax of smooth random logits: regions of one class with edges between them, like a segmentation's."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, classes, blobs, blobs, generator=gen) * 4
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False).softmax(1)


def _resized(p: torch.Tensor, grid: Grid) -> torch.Tensor:
    up = F.interpolate(p, size=(grid.side, grid.side), mode="bilinear", align_corners=False)
    return up[..., grid.top:grid.top + grid.h, grid.left:grid.left + grid.w]


@pytest.mark.parametrize("size, h, w, blobs", [
    (48, 60, 70, 6),    # up, padded in rows
    (48, 70, 60, 48),   # up, padded in columns, a class change at nearly every pixel
    (32, 512, 90, 4),   # far up, a tall scan
    (64, 40, 40, 8),    # down: a scan smaller than the model's slices
])
def test_the_arg_max_of_resized_probabilities_needs_only_the_mixed_pixels(size, h, w, blobs):
    """Grid.labels_bilinear equals resizing every class and taking the arg-max, where the two best classes
    differ by more than rounding (bit for bit there)."""
    p = _probabilities(3, 9, size, seed=size + h, blobs=blobs)
    grid = Grid(h, w)
    full = _resized(p, grid)
    top2 = full.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1] > 1e-6).numpy()
    labels = grid.labels_bilinear(p)
    expected = full.argmax(1).numpy().astype(np.uint8)
    assert labels.shape == (3, h, w) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels[clear], expected[clear])
    assert clear.mean() > 0.99


def test_ties_go_to_the_lower_class_as_arg_max_s_do():
    p = _probabilities(2, 9, 48, seed=0, blobs=48)
    p[:, 4] = p[:, 2]  # exact ties everywhere between classes 2 and 4
    labels = Grid(60, 70).labels_bilinear(p)
    assert not (labels == 4).any()
    np.testing.assert_array_equal(labels, _resized(p, Grid(60, 70)).argmax(1).numpy())


def test_probability_maps_resize_one_class_at_a_time_as_the_whole_stack_would():
    from hkd.infer.segment import ProbabilityMaps

    p = _probabilities(5, 4, 48, seed=1, blobs=6)
    grid = Grid(60, 70)
    maps = ProbabilityMaps(grid, p.numpy())
    whole = _resized(p, grid).numpy().astype(np.float16)
    for c in range(4):
        out = maps.resized(c, chunk=2)  # chunks of slices: the same per-slice arithmetic
        assert out.dtype == np.float16
        np.testing.assert_array_equal(out, whole[:, c])


def test_labels_go_back_by_nearest_neighbour_into_the_scan_s_window():
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[0, 8:24, :] = 1  # the scan's rows: a 32 x 64 scan padded to 64 x 64 fills rows 8..23 of 32
    back = Grid(32, 64).labels_nearest(labels)
    assert back.shape == (1, 32, 64) and (back == 1).all()


def test_model_slices_are_made_as_the_training_slices_were():
    volume = np.random.default_rng(0).random((4, 40, 64), dtype=np.float32)
    expected = resize_slices(pad_to_square(volume, -1.0), 32, "image", (-1.0, 1.0))[:, None]
    np.testing.assert_array_equal(model_slices(volume, 32, (-1.0, 1.0)), expected)


def test_class_argmax_is_argmax_ties_included():
    scores = torch.randn(3, 9, 20, 20, generator=torch.Generator().manual_seed(2))
    scores[:, 6] = scores[:, 3]  # exact ties: the lower class wins
    expected = scores.argmax(1).to(torch.uint8)
    assert torch.equal(class_argmax(scores), expected) and not (expected == 6).any()

