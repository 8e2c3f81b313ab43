"""Calibration of a model's per-pixel class probabilities: does a pixel predicted with confidence 0.8 turn out
right 80% of the time?

- **ECE** (expected calibration error, top-label): the pixels binned by their largest probability into
  :data:`BINS` equal-width bins over [0, 1]; the pixel-weighted mean over bins of |accuracy - mean
  confidence|. 0 is perfectly calibrated.
- **Brier score**: the mean over pixels of the squared distance between the probability vector and the
  one-hot true class, summed over classes (0 best, 2 worst).
- Both **over all pixels** of a case and **over its region**: the labelled or predicted foreground dilated by
  :data:`MARGIN_MM` in-plane. Easy background far from any organ is most of a CT slice and drives the
  all-pixel ECE towards 0 for any model; the region is where a segmentation's probabilities are used.
- **Temperature scaling** (Guo et al., 2017): one scalar ``T`` per model dividing its logits, fitted on the
  validation cases by minimising the negative log-likelihood of their region pixels; it changes no arg-max
  (the labels, Dice and HD95 stay), only the confidence. A scratch student with its fitted ``T`` is the fair
  baseline for a claim that distillation calibrates a student.

A pixel's probabilities are the model's at its nearest pixel of the model's grid, as evaluation's labels
(:meth:`hkd.infer.grid.Grid.values_nearest`). Values are per test case (the statistical unit of the verdicts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, optimize

from hkd.infer.grid import Grid, class_argmax, model_slices

BINS = 15
MARGIN_MM = 10.0
#: Validation pixels a temperature is fitted on, at most (drawn evenly, seeded): 1M keeps the fit to seconds.
FIT_PIXELS = 1_000_000
TEMPERATURE_RANGE = (0.05, 20.0)


@dataclass
class Tally:
    """Running sums over pixels for the ECE (per confidence bin) and the Brier score."""

    bins: int = BINS
    count: np.ndarray = field(default_factory=lambda: np.zeros(BINS))
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(BINS))
    correct: np.ndarray = field(default_factory=lambda: np.zeros(BINS))
    brier_sum: float = 0.0

    def add(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Pixels' probabilities (N, C) and true classes (N,)."""
        if not len(labels):
            return
        conf, pred = probs.max(1)
        index = (conf * self.bins).long().clamp_(0, self.bins - 1)  # bin b holds (b/B, (b+1)/B], 1.0 the last
        self.count += torch.bincount(index, minlength=self.bins).double().numpy()
        self.confidence += torch.bincount(index, conf.double(), minlength=self.bins).numpy()
        self.correct += torch.bincount(index, (pred == labels).double(), minlength=self.bins).numpy()
        true = probs.gather(1, labels[:, None].long())[:, 0]
        self.brier_sum += float((probs.double().square().sum(1) - 2 * true.double() + 1).sum())

    @property
    def pixels(self) -> int:
        return int(self.count.sum())

    @property
    def ece(self) -> float:
        return float(np.abs(self.correct - self.confidence).sum() / self.pixels) if self.pixels else math.nan

    @property
    def brier(self) -> float:
        return self.brier_sum / self.pixels if self.pixels else math.nan


def region_mask(truth: np.ndarray, pred: np.ndarray, spacing, margin_mm: float = MARGIN_MM) -> np.ndarray:
    """(D, H, W) bool: the labelled or predicted foreground, dilated in-plane by ``margin_mm`` (an ellipse of
    that radius in mm on the slice's pixel grid; ``spacing`` is (z, y, x) mm)."""
    foreground = (truth > 0) | (pred > 0)
    ry, rx = (max(int(round(margin_mm / float(s))), 0) for s in spacing[1:])
    y, x = np.ogrid[-ry:ry + 1, -rx:rx + 1]
    disk = (y / max(ry, 1)) ** 2 + (x / max(rx, 1)) ** 2 <= 1
    return ndimage.binary_dilation(foreground, structure=disk[None]) if foreground.any() else foreground


def case_logits(run, image: np.ndarray, size: int, scale: tuple[float, float], batch_size: int):
    """The model's logits on a prepared volume (D, H, W), batch by batch: yields (first slice, logits (N, C, S, S))."""
    for i in range(0, len(image), batch_size):
        yield i, torch.from_numpy(run(model_slices(image[i:i + batch_size], size, scale)))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising the mean negative log-likelihood of softmax(logits / T) for the true classes
    ``labels``: logits (N, C), labels (N,). A bounded search over log T in :data:`TEMPERATURE_RANGE`."""
    if not len(labels):
        return 1.0
    logits, labels = logits.double(), labels.long()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    best = optimize.minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(best.x))


def _case_batches(run, image: np.ndarray, truth: np.ndarray, spacing, size: int, scale: tuple[float, float],
                  batch_size: int):
    """A case, batch by batch, on the scan's grid: yields (slices, logits (N, C, h, w) of each pixel's nearest model
    pixel, evaluation's labels (N, h, w) uint8, true classes (N, h, w) int64, the region (N, h, w) bool)."""
    grid = Grid(*image.shape[1:])
    for i, logits in case_logits(run, image, size, scale, batch_size):
        part = slice(i, i + len(logits))
        labels = grid.labels_nearest(class_argmax(logits))
        mask = torch.from_numpy(region_mask(truth[part], labels, spacing))
        yield part, grid.values_nearest(logits), labels, torch.from_numpy(truth[part].astype(np.int64)), mask


def region_pixels(run, image: np.ndarray, truth: np.ndarray, spacing, size: int, scale: tuple[float, float],
                  batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A case's region pixels (:func:`region_mask`): their logits (M, C) on the scan's grid and true classes (M,)."""
    parts, classes = [], []
    for _, native, _, truth_part, mask in _case_batches(run, image, truth, spacing, size, scale, batch_size):
        parts.append(native.permute(0, 2, 3, 1)[mask])
        classes.append(truth_part[mask])
    return torch.cat(parts), torch.cat(classes)


def subsample(logits: torch.Tensor, labels: torch.Tensor, limit: int = FIT_PIXELS, seed: int = 0):
    """At most ``limit`` of the pixels, drawn without replacement by a seeded generator."""
    if len(labels) <= limit:
        return logits, labels
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:limit]
    return logits[keep], labels[keep]


def segment_and_calibrate(run, image: np.ndarray, truth: np.ndarray, spacing, size: int,
                          scale: tuple[float, float], temperature: float, batch_size: int):
    """Labels (D, H, W) uint8 as evaluation predicts them (the model's arg-max, nearest neighbour) and the case's
    calibration: ``{"all": Tally, "region": Tally, "all_ts": Tally, "region_ts": Tally}`` (``_ts``: after
    dividing the logits by ``temperature``), from one pass of the network."""
    labels = np.empty(image.shape, dtype=np.uint8)
    tallies = {key: Tally() for key in ("all", "region", "all_ts", "region_ts")}
    for part, native, batch_labels, truth_part, mask in _case_batches(run, image, truth, spacing, size, scale,
                                                                      batch_size):
        labels[part] = batch_labels
        for suffix, t in (("", 1.0), ("_ts", temperature)):
            probs = (native / t).softmax(1).permute(0, 2, 3, 1)
            tallies["all" + suffix].add(probs.reshape(-1, probs.shape[-1]), truth_part.reshape(-1))
            tallies["region" + suffix].add(probs[mask], truth_part[mask])
    return labels, tallies
