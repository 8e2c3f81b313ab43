"""A training job's one line per epoch: losses, validation Dice, the epoch's seconds and the time left."""

from __future__ import annotations

from hkd.train.gradient_balance import PREFIX
from hkd.train.tracking import NOT_TERMS


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def epoch_line(row: dict, history: list[dict], epochs: int) -> str:
    """``row`` (the epoch just trained, as in ``log.csv``) in one line; the time left is the mean of the
    epochs in ``history`` times the epochs to go."""
    terms = [k for k in row if k not in NOT_TERMS and not k.startswith(("val_", PREFIX))]
    losses = " + ".join(f"{k} {row[k]:.4f}" for k in terms)
    organs = ", ".join(f"{k[len('val_dice_'):]} {v:.3f}" for k, v in row.items()
                       if k.startswith("val_dice_") and v == v)  # nan: not in the validation slices
    per_epoch = sum(r["seconds"] for r in history) / max(len(history), 1)
    left = duration(per_epoch * (epochs - row["epoch"]))
    return (f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f}" + (f" ({losses})" if losses else "")
            + f"; val Dice {row['val_dice']:.4f}" + (f" ({organs})" if organs else "")
            + f"; {row['seconds']:.1f} s, about {left} left")
