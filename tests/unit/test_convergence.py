"""The convergence rule tells a learned, flat curve from a rising one and from the liver-only plateau."""

from __future__ import annotations

import csv
import json

import pytest

from hkd.train import convergence
from hkd.train.trainer import train

from helpers import CLASSES, TINY_STUDENT

ORGANS = CLASSES[1:]


def _history(curve, organs_predicted: int) -> list[dict]:
    """Rows of a log: mean validation Dice ``curve``; the first ``organs_predicted`` organs share it, the
    others sit at 0."""
    rows = []
    for epoch, dice in enumerate(curve, start=1):
        per = [dice * len(ORGANS) / organs_predicted if i < organs_predicted else 0.0 for i in range(len(ORGANS))]
        rows.append({"epoch": epoch, "loss": 1.0 / epoch, "val_dice": dice,
                     **{f"val_dice_{o}": d for o, d in zip(ORGANS, per)}})
    return rows


def test_the_liver_only_plateau_is_not_converged():
    flat = [0.0, 0.0, 0.09, 0.10, 0.10, 0.10, 0.10, 0.10]  # one organ at 0.8, the rest 0
    assert convergence.assess(_history(flat, 1)) == (False, "plateau: predicts 1 of 8 organs")


def test_a_rising_curve_is_not_converged():
    rising = [0.0, 0.1, 0.2, 0.3, 0.36, 0.40, 0.44, 0.47]
    assert convergence.assess(_history(rising, 8)) == (False, "still rising (+0.11 over the last 3 epochs)")


def test_a_run_ending_with_most_organs_at_zero_is_stalled_even_while_rising():
    """The default's logits x1.5 seed 2: validation Dice 0.18 and rising, six of eight organs at 0."""
    rising = [0.0, 0.02, 0.05, 0.08, 0.1, 0.12, 0.15, 0.18]
    assert convergence.assess(_history(rising, 2))[1].startswith("still rising")
    assert convergence.stalled(_history(rising, 2))
    assert convergence.stalled(_history(rising, 4))  # half the organs at 0: stalled too
    assert not convergence.stalled(_history(rising, 5))
    learned = [0.1, 0.3, 0.5, 0.6, 0.62, 0.63, 0.625, 0.635]
    assert not convergence.stalled(_history(learned, 8)) and not convergence.stalled([])


def test_a_flat_curve_predicting_every_organ_is_converged():
    learned = [0.1, 0.3, 0.5, 0.6, 0.62, 0.63, 0.625, 0.635]  # +0.005 over the last 3: noise
    assert convergence.assess(_history(learned, 8)) == (True, "converged")
    assert convergence.assess(_history(learned, 4)) == (True, "converged")  # half the organs: most
    assert convergence.assess(_history(learned, 3))[0] is False


def test_a_run_past_its_best_epoch_is_converged_and_a_diverged_or_short_one_is_not():
    overfit = [0.1, 0.3, 0.5, 0.6, 0.65, 0.6, 0.58, 0.57]
    assert convergence.assess(_history(overfit, 8)) == (True, "converged")
    assert convergence.assess(_history(overfit, 8), status="diverged") == (False, "diverged")
    assert convergence.assess(_history(overfit[:5], 8)) == (False, "too few epochs (5 < 6)")


def test_organs_absent_from_validation_do_not_count():
    rows = _history([0.1, 0.3, 0.5, 0.6, 0.62, 0.63, 0.625, 0.635], 4)
    for row in rows:  # four organs neither present in validation nor predicted: Dice undefined (NaN)
        row.update({f"val_dice_{o}": float("nan") for o in ORGANS[4:]})
    assert convergence.assess(rows) == (True, "converged")


@pytest.mark.slow
def test_a_run_records_whether_it_converged(prepared, tmp_path):
    metrics = train({"model": TINY_STUDENT, "epochs": 2, "batch_size": 8, "device": "cpu"}, prepared, tmp_path,
                    progress=False)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["converged"] is False and written["convergence"] == "too few epochs (2 < 6)"
    assert written["gradient_flags"] == [] and metrics["convergence"] == written["convergence"]
    history = [{k: float(v) if k.startswith("val_dice") else v for k, v in row.items()}
               for row in csv.DictReader(open(tmp_path / "log.csv"))]
    assert written["stalled"] is convergence.stalled(history)  # the rule on the run's own log
