"""Whether a run converged, decided from its per-epoch validation history (``log.csv``).

The rule. A run converged when both hold:

(a) its curve has flattened: the best mean validation Dice of the last :data:`WINDOW` epochs exceeds the
    best of all earlier epochs by less than :data:`MIN_GAIN`; and
(b) it has learned the task, not stalled on the plateau where only the largest organ (the liver) is
    predicted: at the best of those last epochs, at least :data:`MIN_ORGAN_SHARE` of the foreground
    classes present in validation have a validation Dice above :data:`ORGAN_FLOOR`.

A curve that is flat is not enough: a run stalled on the liver-only plateau is flat too, and (b) tells
the two apart.

Stalled, whatever the curve does: a run that ends (its last epoch) with at least :data:`MIN_ORGAN_SHARE` of
the foreground classes present in validation at a validation Dice of at most :data:`ORGAN_FLOOR`
(:func:`stalled`). Such a run may still be "rising" on a curve of a few organs; its numbers say little
about the method. A diverged run, or one with fewer than :data:`MIN_EPOCHS` epochs (too short to compare
its last epochs with earlier ones), has not converged.

The constants suit the short runs of a study (8 to 30 epochs): 3 epochs are a window that still leaves
earlier epochs to compare with at 8; a gain below 0.02 Dice over 3 epochs (under 0.007 per epoch) is the
size of the epoch-to-epoch noise of a converged run's validation Dice; a class counts as predicted once its
Dice exceeds 0.1 (the liver-only plateau leaves every other organ at 0 to 0.01); half the classes is "most
organs" with room for the smallest ones (gallbladder, aorta), which a converged student may still miss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

WINDOW = 3  # K: the last epochs whose gain is measured
MIN_GAIN = 0.02  # G: a gain of mean validation Dice below this over the window counts as flat
MIN_EPOCHS = 2 * WINDOW  # the window and as many epochs before it
ORGAN_FLOOR = 0.1  # a class with validation Dice above this counts as predicted
MIN_ORGAN_SHARE = 0.5  # F: share of the foreground classes present in validation that must be predicted


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def stalled(history: Sequence[dict]) -> bool:
    """Whether the run's last epoch leaves at least half the foreground classes present in validation at a
    validation Dice of at most :data:`ORGAN_FLOOR` (never for a run with no validated epoch)."""
    rows = [r for r in history if _finite(r.get("val_dice")) is not None]
    if not rows:
        return False
    present = [d for d in (_finite(v) for k, v in rows[-1].items() if k.startswith("val_dice_")) if d is not None]
    return bool(present) and sum(d <= ORGAN_FLOOR for d in present) >= MIN_ORGAN_SHARE * len(present)


def assess(history: Sequence[dict], status: str = "completed") -> tuple[bool, str]:
    """``(converged, reason)`` for a run's per-epoch rows (``epoch``, ``val_dice``, ``val_dice_<class>``).

    ``reason`` is ``"converged"``, ``"diverged"``, ``"too few epochs (n < 6)"``,
    ``"still rising (+0.07 over the last 3 epochs)"`` or ``"plateau: predicts 1 of 8 organs"``.
    """
    if status == "diverged":
        return False, "diverged"
    rows = [r for r in history if _finite(r.get("val_dice")) is not None]
    if len(rows) < MIN_EPOCHS:
        return False, f"too few epochs ({len(rows)} < {MIN_EPOCHS})"
    window, before = rows[-WINDOW:], rows[:-WINDOW]
    best = max(window, key=lambda r: float(r["val_dice"]))
    gain = float(best["val_dice"]) - max(float(r["val_dice"]) for r in before)
    if gain >= MIN_GAIN:
        return False, f"still rising ({gain:+.2f} over the last {WINDOW} epochs)"
    organs = [_finite(v) for k, v in best.items() if k.startswith("val_dice_")]
    present = [d for d in organs if d is not None]  # a class neither present nor predicted has no Dice
    predicted = sum(d > ORGAN_FLOOR for d in present)
    if not present or predicted < MIN_ORGAN_SHARE * len(present):
        return False, f"plateau: predicts {predicted} of {len(present)} organs"
    return True, "converged"
