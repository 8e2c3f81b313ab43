"""hkd.evaluate.calibration: ECE, Brier score, the region around the organs, temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hkd.evaluate.calibration import Tally, fit_temperature, region_mask, segment_and_calibrate


def _two_class(confidence: float, right: int, n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """n pixels predicting class 0 with ``confidence``; the first ``right`` of them are class 0."""
    probs = torch.tensor([[confidence, 1 - confidence]]).repeat(n, 1)
    labels = torch.ones(n, dtype=torch.long)
    labels[:right] = 0
    return probs, labels


def test_a_calibrated_predictor_has_no_calibration_error():
    tally = Tally()
    for confidence in (0.6, 0.8, 0.95):  # three bins, each right as often as it says
        tally.add(*_two_class(confidence, int(confidence * 1000)))
    assert tally.ece == pytest.approx(0.0, abs=1e-6) and tally.pixels == 3000  # float32 confidences


def test_an_overconfident_predictor_by_hand():
    tally = Tally()
    tally.add(*_two_class(0.99, 700))
    assert tally.ece == pytest.approx(0.29)
    # Brier: right pixels (0.01^2 + 0.01^2), wrong pixels (0.99^2 + 0.99^2)
    assert tally.brier == pytest.approx(0.7 * 0.0002 + 0.3 * 1.9602)
    split = Tally()  # sums over batches equal one pass
    probs, labels = _two_class(0.99, 700)
    split.add(probs[:333], labels[:333])
    split.add(probs[333:], labels[333:])
    assert split.ece == pytest.approx(tally.ece) and split.brier == pytest.approx(tally.brier)


def test_a_confidence_of_one_falls_in_the_last_bin_and_an_empty_tally_is_nan():
    tally = Tally()
    tally.add(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert tally.count[-1] == 1 and tally.ece == 0.0
    assert np.isnan(Tally().ece) and np.isnan(Tally().brier)


def test_temperature_scaling_finds_the_temperature_the_labels_were_drawn_at():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(200_000, 5, generator=gen) * 3
    for true_t in (0.5, 2.5):
        labels = torch.multinomial((logits / true_t).softmax(1), 1, generator=gen)[:, 0]
        assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.03)


def test_temperature_scaling_lowers_the_error_of_an_overconfident_model_and_keeps_its_labels():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(50_000, 4, generator=gen) * 2
    labels = torch.multinomial((logits / 3.0).softmax(1), 1, generator=gen)[:, 0]  # the model is overconfident
    t = fit_temperature(logits, labels)
    before, after = Tally(), Tally()
    before.add(logits.softmax(1), labels)
    after.add((logits / t).softmax(1), labels)
    assert t > 2 and after.ece < before.ece / 3 and after.brier < before.brier
    assert torch.equal((logits / t).argmax(1), logits.argmax(1))


def test_the_region_is_the_foreground_dilated_in_millimetres_in_plane():
    truth = np.zeros((3, 41, 41), dtype=np.uint8)
    truth[1, 20, 20] = 3
    pred = np.zeros_like(truth)
    mask = region_mask(truth, pred, (5.0, 1.0, 1.0), margin_mm=10.0)
    assert not mask[0].any() and not mask[2].any()  # never across slices
    assert mask[1, 20, 10] and mask[1, 20, 30] and not mask[1, 20, 9] and mask[1, 13, 13] and not mask[1, 12, 12]
    wide = region_mask(truth, pred, (5.0, 0.5, 1.0), margin_mm=10.0)  # 0.5 mm rows: 20 pixels up and down
    assert wide[1, 0, 20] and wide[1, 40, 20] and not wide[1, 20, 9]
    pred[2, 5, 5] = 1  # a predicted organ counts too
    assert region_mask(truth, pred, (5.0, 1.0, 1.0))[2, 5, 5]
    assert not region_mask(np.zeros_like(truth), np.zeros_like(truth), (1, 1, 1)).any()


def test_one_pass_gives_evaluations_labels_and_the_case_calibration():
    from hkd.infer.runtime import torch_runner
    from hkd.infer.segment import segment_volume
    from hkd.models import build_model

    torch.manual_seed(0)
    network = build_model({"arch": "squeezeunet", "width": 0.25, "num_classes": 4}).eval()
    run = torch_runner(network, torch.device("cpu"))
    rng = np.random.default_rng(0)
    image = rng.random((5, 40, 56), dtype=np.float32)
    truth = rng.integers(0, 4, (5, 40, 56)).astype(np.uint8)
    labels, tallies = segment_and_calibrate(run, image, truth, (3.0, 0.8, 0.8), 32, (0.0, 1.0), 2.0, batch_size=2)
    assert np.array_equal(labels, segment_volume(run, image, 32, (0.0, 1.0), upsample="nearest")[0])
    assert tallies["all"].pixels == truth.size >= tallies["region"].pixels > 0
    assert tallies["all_ts"].pixels == truth.size and tallies["all_ts"].ece != tallies["all"].ece


def test_the_reliability_table_pools_each_models_bins_over_runs_and_cases():
    import pandas as pd

    from hkd.evaluate.metrics import CASE_ROW
    from hkd.evaluate.tables import reliability_table

    rows = []
    for seed, case, count, conf, correct in ((0, "a", 10, 9.0, 8.0), (0, "b", 30, 27.0, 21.0), (1, "a", 0, 0, 0)):
        for what, value in (("count", count), ("confidence", conf), ("correct", correct)):
            rows.append({"method": "scratch", "width": "0.4M", "seed": seed, "case": case, "organ": CASE_ROW,
                         "metric": f"reliability_13_{what}", "value": value})
    rows.append({"method": "scratch", "width": "0.4M", "seed": 0, "case": "a", "organ": "liver", "metric": "dice",
                 "value": 0.9})
    table = reliability_table(pd.DataFrame(rows))
    assert table.to_dict("records") == [{"method": "scratch", "width": "0.4M", "bin": 13, "pixels": 40,
                                         "confidence": pytest.approx(0.9), "accuracy": pytest.approx(29 / 40)}]
