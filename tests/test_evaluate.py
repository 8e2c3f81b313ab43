"""Volume-level evaluation of trained runs, study tables and hypothesis verdicts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from hkd.evaluate.hypotheses import context_claims, dice_claims
from hkd.evaluate.tables import organ_table, run_means, summary_table, to_markdown
from hkd.evaluate.volume import COLUMNS, evaluate_run, predict_volume
from hkd.train.trainer import train


class Oracle(torch.nn.Module):
    """Predicts class 1 wherever the image is bright: lets the resize round trip be checked."""

    def forward(self, x):
        bright = (x > 0.5).float()
        return torch.cat([1 - bright, bright], dim=1)


def test_predict_volume_maps_predictions_back_onto_the_native_grid():
    image = np.zeros((3, 40, 64), np.float32)  # non-square slices
    image[:, 10:30, 20:44] = 1.0
    pred = predict_volume(Oracle(), image, 32, torch.device("cpu"))
    assert pred.shape == image.shape and pred.dtype == np.uint8
    agreement = (pred == (image > 0.5)).mean()
    assert agreement > 0.97


@pytest.fixture(scope="module")
def runs(prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = {"model": {"arch": "squeezeunet", "width": 0.25}, "epochs": 1, "batch_size": 8, "device": "cpu"}
    train(cfg, prepared, root / "ok", progress=False)
    train({**cfg, "lr": 1e8, "momentum": 0.0, "epochs": 2}, prepared, root / "diverged", progress=False)
    return root


def test_evaluate_run_gives_a_tidy_table(runs, prepared):
    table = evaluate_run(runs / "ok", prepared, model_name="scratch_w0.25", method="scratch", width="0.25", seed=0)
    assert list(table.columns) == COLUMNS
    assert set(table["metric"]) == {"dice", "iou", "hd95_mm", "hd95_vox"}
    assert set(table["case"]) == {"0005"} and table["status"].eq("completed").all()
    assert table["empty"].isin(["neither", "gt_empty", "pred_empty", "both_empty"]).all()
    assert table["value"].notna().all()


def test_a_diverged_run_is_evaluated_from_its_last_finite_checkpoint(runs, prepared, monkeypatch):
    assert json.loads((runs / "diverged" / "metrics.json").read_text())["status"] == "diverged"
    loaded = []
    import hkd.evaluate.volume as volume

    real = volume.load_model
    monkeypatch.setattr(volume, "load_model", lambda p: (loaded.append(p.name), real(p))[1])
    table = evaluate_run(runs / "diverged", prepared, model_name="x", method="latent", width="0.25", seed=0)
    assert loaded == ["last.pt"] and table["status"].eq("diverged").all()


def _evals(effect: float, n_cases: int = 12, seeds=(0, 1)) -> pd.DataFrame:
    """Synthetic tidy evaluations where 'logits' beats 'scratch' by ``effect`` Dice."""
    rng = np.random.default_rng(0)
    rows = []
    for method, shift in (("scratch", 0.0), ("logits", effect), ("latent", -effect)):
        for seed in seeds:
            for case in range(n_cases):
                for organ in ("liver", "spleen"):
                    base = 0.6 + 0.01 * case + rng.normal(0, 0.01)
                    for metric, value in (("dice", base + shift), ("iou", base / 2), ("hd95_mm", 5.0),
                                          ("hd95_vox", 4.0)):
                        rows.append({"model": f"{method}_w0.4M", "method": method, "width": "0.4M",
                                     "params": 423961, "seed": seed, "status": "completed",
                                     "case": f"{case:04d}", "organ": organ, "empty": "neither",
                                     "metric": metric, "value": value})
    return pd.DataFrame(rows)


def test_verdicts_follow_the_paired_differences():
    verdicts = dice_claims(_evals(0.05)).set_index("method")
    assert verdicts.loc["logits", "verdict"] == "supported"
    assert verdicts.loc["logits", "mean_diff"] == pytest.approx(0.05, abs=0.01)
    assert verdicts.loc["logits", "ci_low"] > 0 and verdicts.loc["logits", "p_value"] < 0.05
    assert verdicts.loc["latent", "verdict"] == "not supported"
    assert verdicts.loc["logits", "n_pairs"] == 24 and verdicts.loc["logits", "diverged_runs"] == "0/2"
    assert verdicts.loc["logits", "claim"].startswith("H1")


def test_no_difference_is_not_supported_and_noise_is_inconclusive():
    assert dice_claims(_evals(0.0)).set_index("method").loc["logits", "verdict"] in ("not supported",
                                                                                      "inconclusive")


def test_study_tables_average_over_seeds():
    evals = _evals(0.05)
    runs = run_means(evals)
    assert len(runs) == 6  # 3 methods x 2 seeds
    summary = summary_table(evals).set_index("method")
    assert summary.loc["logits", "seeds"] == 2
    assert summary.loc["logits", "dice_mean"] - summary.loc["scratch", "dice_mean"] == pytest.approx(0.05, abs=0.01)
    organs = organ_table(evals)
    assert set(organs["organ"]) == {"liver", "spleen"}
    assert "| logits" in to_markdown(summary.reset_index())


def test_context_claims_compare_grad_cam_mass_with_scratch():
    rows = []
    for method, share in (("scratch", 0.1), ("logits", 0.3)):
        for i in range(10):
            rows.append({"model": method, "method": method, "width": "0.4M", "seed": 0, "case": "0001", "slice": i,
                         "organ": "liver", "outside_mass": share + 0.001 * i})
    claims = context_claims(pd.DataFrame(rows))
    assert len(claims) == 1 and claims.iloc[0]["verdict"] == "supported"
    assert claims.iloc[0]["mean_diff"] == pytest.approx(0.2)
