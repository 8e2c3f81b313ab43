"""A volume segmented by a model, slice batch by slice batch: what evaluation, ``hkd predict``, export's checks
and ``hkd cost``'s volume timing all run.

``upsample`` says how predictions return to the scan's grid (:class:`hkd.infer.grid.Grid`): ``"nearest"``
(the model's arg-max by nearest neighbour, as ``hkd evaluate`` and TransUNet do) or ``"probabilities"`` (the
class probabilities resized bilinearly and arg-maxed on the scan's grid; ``hkd predict``'s default).

Test-time augmentation (``tta``) averages the probabilities of the slice and of its mirror images along
each in-plane axis and both (4 passes). Mirroring swaps the patient's left and right, so it helps only a
model that was trained with flips (the ``transunet`` augmentation) and can hurt lateral classes otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hkd.errors import DataError
from hkd.infer.grid import Grid, class_argmax, model_slices

UPSAMPLE = ("probabilities", "nearest")
_FLIPS = ((), (-1,), (-2,), (-2, -1))

Runner = Callable[[np.ndarray], np.ndarray]  # slices (N, 1, S, S) float32 -> logits (N, C, S, S) float32


def probabilities(run: Runner, x: np.ndarray, tta: bool = False) -> torch.Tensor:
    """Softmax over classes of the logits on slices ``x`` (N, 1, S, S), averaged over mirror images with ``tta``."""
    total = None
    for dims in _FLIPS if tta else ((),):
        xi = np.flip(x, dims) if dims else x
        p = torch.from_numpy(run(np.ascontiguousarray(xi))).softmax(1)
        p = p.flip(dims) if dims else p
        total = p if total is None else total + p
    return total / (len(_FLIPS) if tta else 1)


@dataclass(frozen=True)
class ProbabilityMaps:
    """A volume's class probabilities, kept on the model's grid (D, C, S, S) and resized onto the scan's grid
    one class at a time (:meth:`resized`): a 512 x 512 x 100 scan's nine float16 maps (472 MB) never stand in
    memory at once."""

    grid: Grid
    model_grid: np.ndarray  # (D, C, S, S) float32

    @property
    def classes(self) -> int:
        return self.model_grid.shape[1]

    def resized(self, c: int, chunk: int = 16) -> np.ndarray:
        """Class ``c``'s probabilities on the scan's grid: (D, H, W) float16."""
        d = len(self.model_grid)
        out = np.empty((d, self.grid.h, self.grid.w), dtype=np.float16)
        for i in range(0, d, chunk):
            out[i:i + chunk] = self.grid.resized(torch.from_numpy(self.model_grid[i:i + chunk, c]))
        return out


def segment_volume(run: Runner, volume: np.ndarray, size: int, scale: tuple[float, float], *,
                   upsample: str = "nearest", tta: bool = False, batch_size: int = 16,
                   probability_maps: bool = False) -> tuple[np.ndarray, ProbabilityMaps | None]:
    """Labels (D, H, W) uint8 of a windowed, display-oriented volume (D, H, W), and with ``probability_maps``
    the class probabilities (:class:`ProbabilityMaps`; bilinear onto the scan's grid in either mode)."""
    if upsample not in UPSAMPLE:
        raise DataError(f"--upsample: '{upsample}' is not one of {', '.join(UPSAMPLE)}")
    d, h, w = volume.shape
    grid = Grid(h, w)
    labels = np.empty((d, h, w), dtype=np.uint8)
    maps = None
    for i in range(0, d, batch_size):
        x = model_slices(volume[i:i + batch_size], size, scale)
        if upsample == "nearest" and not tta and not probability_maps:
            labels[i:i + batch_size] = grid.labels_nearest(class_argmax(torch.from_numpy(run(x))))
            continue
        p = probabilities(run, x, tta)
        if probability_maps:
            if maps is None:
                maps = np.empty((d, *p.shape[1:]), dtype=np.float32)
            maps[i:i + batch_size] = p.numpy()
        labels[i:i + batch_size] = grid.labels_nearest(class_argmax(p)) if upsample == "nearest" else \
            grid.labels_bilinear(p)
    return labels, None if maps is None else ProbabilityMaps(grid, maps)
