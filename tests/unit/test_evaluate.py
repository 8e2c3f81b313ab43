"""Volume-level evaluation of trained runs, study tables and hypothesis verdicts."""

from __future__ import annotations

import copy
import json

import helpers
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import REPO, default_config, merge
from snakemake.utils import validate

from hkd.cli import main
from hkd.config_checks import check_config
from hkd.evaluate.hypotheses import COLUMNS as VERDICT_COLUMNS
from hkd.evaluate.hypotheses import context_claims, dice_claims, study_claims
from hkd.evaluate.metrics import CALIBRATION_METRICS, CASE_ROW
from hkd.evaluate.stats import FRAGILE_MARGIN, holm, verdict_margin
from hkd.evaluate.tables import (
    organ_table,
    run_means,
    summary_table,
    to_html,
    to_markdown,
)
from hkd.evaluate.volume import COLUMNS, evaluate_run, predict_volume
from hkd.infer.runtime import torch_runner
from hkd.train.trainer import train


class Oracle(torch.nn.Module):
    """Predicts class 1 wherever the image is bright: lets the resize round trip be checked."""

    def forward(self, x):
        bright = (x > 0.5).float()
        return torch.cat([1 - bright, bright], dim=1)


def test_predict_volume_maps_predictions_back_onto_the_native_grid():
    image = np.zeros((3, 40, 64), np.float32)  # non-square slices
    image[:, 10:30, 20:44] = 1.0
    pred = predict_volume(torch_runner(Oracle()), image, 32)
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
    case_rows = table[table["organ"] == CASE_ROW]
    table = table[table["organ"] != CASE_ROW]
    assert set(table["metric"]) == {"dice", "iou", "voe", "rvd", "hd95_mm", "hd95_vox"}
    assert set(table["case"]) == {"0005"} and table["status"].eq("completed").all()
    assert table["empty"].isin(["neither", "gt_empty", "pred_empty", "both_empty"]).all()
    # the case's calibration: ECE and Brier score in range, a fitted temperature, the region's reliability bins
    calibration = case_rows.set_index("metric")["value"]
    assert set(CALIBRATION_METRICS) <= set(calibration.index) and case_rows["empty"].eq("n/a").all()
    assert all(0 <= calibration[m] <= 1 for m in ("ece", "ece_region", "ece_ts", "ece_region_ts"))
    assert all(0 <= calibration[m] <= 2 for m in ("brier", "brier_region")) and calibration["temperature"] > 0
    assert calibration["ece"] != calibration["ece_region"]
    assert sum(calibration[f"reliability_{b:02d}_count"] for b in range(15)) > 0
    undefined = (table["metric"] == "rvd") & table["empty"].isin(["gt_empty", "both_empty"])
    assert table.loc[~undefined, "value"].notna().all()
    assert table.loc[undefined, "value"].isna().all()  # RVD divides by the ground truth's volume


def test_a_diverged_run_is_evaluated_from_its_last_finite_checkpoint(runs, prepared, monkeypatch):
    assert json.loads((runs / "diverged" / "metrics.json").read_text())["status"] == "diverged"
    loaded = []
    from hkd.evaluate import volume

    real = volume.load_model
    monkeypatch.setattr(volume, "load_model", lambda p: (loaded.append(p.name), real(p))[1])
    table = evaluate_run(runs / "diverged", prepared, model_name="x", method="latent", width="0.25", seed=0)
    assert loaded == ["last.pt"] and table["status"].eq("diverged").all()


ORGANS = ("spleen", "right_kidney", "liver", "pancreas")


def test_tables_read_a_real_evaluation_with_its_parameter_count(runs, prepared):
    table = evaluate_run(runs / "ok", prepared, model_name="scratch_w0.25", method="scratch", width="0.25", seed=0)
    params = json.loads((runs / "ok" / "metrics.json").read_text())["params"]
    row = summary_table(table).iloc[0]
    assert row["params"] == params and row["preset"] == "" and row["multiplier"] == 0.25
    present = table[(table["metric"] == "dice") & table["empty"].isin(["neither", "pred_empty"])]
    assert row["gt_pairs"] == str(len(present))
    assert row["empty_pred"] == str((present["empty"] == "pred_empty").sum())
    assert np.isnan(row["dice_std"])
    # what metrics.json says of the run reaches the table: one epoch is too few to have converged
    assert table["converged"].eq(False).all() and table["convergence"].eq("too few epochs (1 < 6)").all()
    assert table["gradient_flags"].eq("").all()
    assert row["converged"] == "0/1" and row["gradient_flagged"] == "0/1"


def test_runs_recorded_before_convergence_was_are_unknown_not_an_error(runs, prepared, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for f in ("best.pt", "last.pt"):
        (old / f).write_bytes((runs / "ok" / f).read_bytes())
    metrics = json.loads((runs / "ok" / "metrics.json").read_text())
    (old / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items()
                                                  if k not in ("converged", "convergence", "gradient_flags")}))
    table = evaluate_run(old, prepared, model_name="scratch_w0.25", method="scratch", width="0.25", seed=0)
    assert table["converged"].isna().all() and table["convergence"].eq("").all()
    table.to_csv(tmp_path / "eval.csv", index=False)
    back = pd.read_csv(tmp_path / "eval.csv", dtype={"case": str, "width": str})
    assert summary_table(back).iloc[0]["converged"] == "n/a"
    without = back.drop(columns=["converged", "convergence", "gradient_flags"])  # an evaluation CSV of before
    assert summary_table(without).iloc[0][["converged", "gradient_flagged"]].tolist() == ["n/a", "0/1"]


def _study(effects: dict, rng: np.random.Generator, n_cases: int = 6, seeds=(0, 1, 2), seed_sd: float = 0.01,
           organs=ORGANS) -> pd.DataFrame:
    """Synthetic tidy evaluations of a study with known true Dice effects over scratch.

    Dice = 0.7 + case effect (shared by every organ and model of the case: organs are correlated
    within a case) + organ effect + method-by-case effect + seed effect (one per run) + the
    method's effect + noise. The teacher (one seed) sits 0.1 above scratch.
    """
    case_eff = rng.normal(0, 0.08, n_cases)
    organ_eff = rng.normal(0, 0.05, len(organs))
    rows = []
    models = [("teacher", "teacher", 0.1, (0,))] + [(m, "0.4M", e, seeds) for m, e in
                                                     {"scratch": 0.0, **effects}.items()]
    for method, width, effect, run_seeds in models:
        by_case = rng.normal(0, 0.02, n_cases)
        for seed in run_seeds:
            run = rng.normal(0, seed_sd)
            for c in range(n_cases):
                for o, organ in enumerate(organs):
                    dice = 0.7 + case_eff[c] + organ_eff[o] + by_case[c] + run + effect + rng.normal(0, 0.03)
                    for metric, value in (("dice", dice), ("iou", dice / (2 - dice)), ("hd95_mm", 5.0 - 10 * dice),
                                          ("hd95_vox", 7.0 - 10 * dice)):
                        rows.append({"model": f"{method}_w{width}", "method": method, "width": width,
                                     "params": 105_000 if method == "teacher" else 423961, "seed": seed,
                                     "status": "completed", "case": f"{c:04d}", "organ": organ, "empty": "neither",
                                     "metric": metric, "value": value})
    return pd.DataFrame(rows)


def test_verdicts_recover_a_known_effect_and_a_known_null():
    evals = _study({"logits": 0.08, "latent": -0.08, "hlfd": 0.0}, np.random.default_rng(7))
    for boot_seed in range(5):
        verdicts = dice_claims(evals, seed=boot_seed, n_boot=4000).set_index("method")
        assert verdicts.loc["logits", "verdict"] == "supported", boot_seed
        assert verdicts.loc["latent", "verdict"] == "not supported", boot_seed
        assert verdicts.loc["hlfd", "verdict"] != "supported", boot_seed
    latent = verdicts.loc["latent"]
    assert latent["p_value"] > 0.9 and latent["ci_high"] < 0  # one-sided: a loss is no evidence of a gain
    logits = verdicts.loc["logits"]
    # every case improves: the exact one-sided p is 2^-6; Holm over the 3 claims of this table triples it
    assert logits["p_value"] == pytest.approx(1 / 64) and logits["p_holm"] == pytest.approx(3 / 64)
    assert logits["mean_diff"] == pytest.approx(0.08, abs=0.03)
    assert logits["unit"] == "test case" and logits["n"] == 6 and logits["seeds"] == "3 vs 3"
    assert logits["ci_low"] > 0 and logits["p_value"] < 0.05 and 0 < logits["mde"] < 0.08
    assert logits["teacher_mean"] - logits["scratch_mean"] == pytest.approx(0.1, abs=0.04)
    assert logits["method_mean"] - logits["scratch_mean"] == pytest.approx(logits["mean_diff"])
    assert logits["claim"].startswith("H1") and logits["diverged_runs"] == "0/3" and logits["note"] == ""
    assert logits["preset"] == "0.4M" and logits["multiplier"] == 1.0 and logits["params"] == 423961


def test_a_verdict_on_unconverged_or_gradient_flagged_runs_says_so(tmp_path):
    evals = _study({"logits": 0.08, "latent": 0.0}, np.random.default_rng(7))
    evals["converged"], evals["convergence"], evals["gradient_flags"] = True, "converged", ""
    stalled = (evals["method"] == "logits") & evals["seed"].isin([1, 2])
    evals.loc[stalled, ["converged", "convergence"]] = [False, "plateau: predicts 1 of 8 organs"]
    rising = (evals["method"] == "scratch") & (evals["seed"] == 0)
    evals.loc[rising, ["converged", "convergence"]] = [False, "still rising (+0.05 over the last 3 epochs)"]
    flagged = (evals["method"] == "latent") & (evals["seed"] < 2)
    evals.loc[flagged, "gradient_flags"] = np.where(evals.loc[flagged, "seed"] == 0, "latent_l1@enc3: 14x",
                                                    "latent_l1@enc3: 12x; latent_l1@enc4: 11x")
    evals.to_csv(tmp_path / "evals.csv", index=False)  # as the tables read it: True/False and blanks from a CSV
    back = pd.read_csv(tmp_path / "evals.csv", dtype={"case": str, "width": str})
    verdicts = dice_claims(back, n_boot=500).set_index("method")
    logits, latent = verdicts.loc["logits"], verdicts.loc["latent"]
    assert logits["unconverged_runs"] == "2/3 vs 1/3" and latent["unconverged_runs"] == "0/3 vs 1/3"
    assert ("rests on unconverged runs: 2 of the method's 3 (plateau 2), 1 of scratch's 3 (still rising 1)"
            in logits["note"])
    assert "rests on unconverged runs: 1 of scratch's 3 (still rising 1)" in latent["note"]
    assert latent["gradient_flagged_runs"] == "2/3" and logits["gradient_flagged_runs"] == "0/3"
    assert ("latent_l1 in block enc3 up to 14x in 2 of 3 runs, latent_l1 in block enc4 up to 11x in 1 of 3 runs"
            in latent["note"]) and "10x" not in logits["note"]
    summary = summary_table(back).set_index("method")
    assert summary.loc["logits", "converged"] == "1/3" and summary.loc["scratch", "converged"] == "2/3"
    assert summary.loc["latent", "gradient_flagged"] == "2/3" and summary.loc["teacher", "converged"] == "1/1"


def test_a_verdict_on_a_stalled_run_says_so_and_the_summary_counts_them(tmp_path):
    """A run that ended with most organs at validation Dice <= 0.1 is stalled whatever its convergence reason
    says (here "still rising"): counted per model, and named in the verdict resting on it."""
    evals = _study({"logits": 0.08}, np.random.default_rng(7))
    evals["converged"], evals["convergence"], evals["stalled"], evals["gradient_flags"] = True, "converged", False, ""
    stalled = (evals["method"] == "logits") & (evals["seed"] == 2)
    evals.loc[stalled, ["converged", "convergence", "stalled"]] = [False, "still rising (+0.08 over the last 3 "
                                                                          "epochs)", True]
    evals.to_csv(tmp_path / "evals.csv", index=False)
    back = pd.read_csv(tmp_path / "evals.csv", dtype={"case": str, "width": str})
    logits = dice_claims(back, n_boot=500).set_index("method").loc["logits"]
    assert "rests on stalled runs (most organs at validation Dice <= 0.1 at the end): 1 of the method's 3" \
        in logits["note"], logits["note"]
    summary = summary_table(back).set_index("method")
    assert summary.loc["logits", "stalled"] == "1/3" and summary.loc["scratch", "stalled"] == "0/3"
    evals = evals.drop(columns="stalled")  # tables written before the column: unknown, no note
    assert summary_table(evals).set_index("method").loc["logits", "stalled"] == "n/a"
    assert "stalled" not in dice_claims(evals, n_boot=200).set_index("method").loc["logits", "note"]


def test_a_null_effect_is_rarely_supported():
    """Under no effect, with a run-to-run spread larger than the case-level one, over 60 studies
    and bootstrap seeds, "supported" comes out at most 5% of the time."""
    verdicts = [dice_claims(_study({"logits": 0.0}, np.random.default_rng(100 + i), seed_sd=0.05), seed=i,
                            n_boot=1000).iloc[0]["verdict"] for i in range(60)]
    assert set(verdicts) <= {"supported", "not supported", "inconclusive"}
    assert verdicts.count("supported") <= 3, verdicts


def test_the_patient_is_the_unit_not_the_organ():
    evals = _study({"logits": 0.03}, np.random.default_rng(3))
    more_organs = pd.concat([evals, evals.assign(organ=evals["organ"] + "_copy")], ignore_index=True)
    a = dice_claims(evals, n_boot=2000).iloc[0]
    b = dice_claims(more_organs, n_boot=2000).iloc[0]
    assert a["n"] == b["n"] == 6  # cases, not 24 or 48 (case, organ) pairs
    for col in ("mean_diff", "ci_low", "ci_high", "p_value", "mde"):
        assert a[col] == pytest.approx(b[col]), col


def test_organs_missing_from_the_ground_truth_do_not_count_and_missed_organs_count_zero():
    evals = _study({"logits": 0.05}, np.random.default_rng(4))
    absent = (evals["organ"] == "pancreas") & (evals["case"] == "0000")
    changed = evals.copy()
    changed.loc[absent & (changed["method"] == "logits"), "empty"] = "gt_empty"
    changed.loc[absent & (changed["method"] != "logits"), "empty"] = "both_empty"
    assert dice_claims(changed, n_boot=1000).iloc[0]["n"] == 6
    missed = evals.copy()
    hit = (missed["method"] == "logits") & (missed["case"] == "0001") & (missed["organ"] == "liver")
    missed.loc[hit, "empty"] = "pred_empty"
    missed.loc[hit & (missed["metric"] == "dice"), "value"] = 0.0
    drop = dice_claims(evals, n_boot=1000).iloc[0]["mean_diff"] - dice_claims(missed, n_boot=1000).iloc[0]["mean_diff"]
    liver = evals[hit & (evals["metric"] == "dice")]["value"].mean()
    assert drop == pytest.approx(liver / len(ORGANS) / 6)


@pytest.mark.parametrize("seeds, phrase", [((0, 1), "barely measured"), ((0,), "one seed measures no")])
def test_a_verdict_on_fewer_than_three_seeds_says_so(seeds, phrase):
    row = dice_claims(_study({"logits": 0.05}, np.random.default_rng(5), seeds=seeds), n_boot=1000).iloc[0]
    assert "fewer than 3 seeds" in row["note"] and phrase in row["note"]
    assert row["seeds"] == f"{len(seeds)} vs {len(seeds)}"


def test_too_few_cases_cannot_be_supported_and_say_so():
    row = dice_claims(_study({"logits": 0.2}, np.random.default_rng(6), n_cases=4), n_boot=1000).iloc[0]
    assert row["verdict"] == "inconclusive" and np.isinf(row["mde"])
    assert row["note"] == "n too small for the corrected alpha: 4 cases give p >= 0.0625, not below 0.05"


def _context(effects: dict, rng: np.random.Generator, n_cases: int = 6) -> pd.DataFrame:
    """Grad-CAM context shares of scratch and ``effects``' methods (3 seeds, 4 slices per case)."""
    rows = []
    for method, share in {"scratch": 0.0, **effects}.items():
        for seed in (0, 1, 2):
            for case in range(n_cases):
                for i in range(4):
                    rows.append({"model": method, "method": method, "width": "0.4M", "seed": seed,
                                 "case": f"{case:04d}", "slice": i, "organ": "liver",
                                 "outside_mass": 0.1 + share + 0.02 * case + rng.normal(0, 0.01)})
    return pd.DataFrame(rows)


def test_the_family_is_every_claim_of_the_table():
    """Three clear Dice gains on 6 cases are supported as a family of 3 (p_holm 3/64) but not in the
    study's family of 6 with the context claims: 6 cases cannot reach 0.05 / 6, and the note says so.
    12 cases can."""
    effects = {"logits": 0.1, "latent": 0.1, "hlfd": 0.1}
    rng = np.random.default_rng(11)
    evals, context = _study(effects, rng, seed_sd=0.005), _context(effects, rng)
    alone = dice_claims(evals, n_boot=2000)
    assert (alone["verdict"] == "supported").all() and alone["p_holm"].tolist() == pytest.approx([3 / 64] * 3)
    table = study_claims(evals, context, n_boot=2000)
    assert len(table) == 6 and table["p_holm"].tolist() == pytest.approx([6 / 64] * 6)
    assert table["p_value"].tolist() == pytest.approx([1 / 64] * 6) and (table["verdict"] == "inconclusive").all()
    assert np.isinf(table["mde"]).all()
    assert table["note"].str.endswith("n too small for the corrected alpha: 6 cases give p >= 0.0156, "
                                      "not below 0.05 / 6 = 0.0083 (6 claims, Holm)").all()
    rng = np.random.default_rng(11)
    larger = study_claims(_study(effects, rng, n_cases=12, seed_sd=0.005), _context(effects, rng, 12), n_boot=2000)
    assert (larger["verdict"] == "supported").all() and np.isfinite(larger["mde"]).all()
    assert (larger["note"] == "").all() and larger["p_holm"].tolist() == pytest.approx([6 / 4096] * 6)


def test_identical_arms_give_p_one_and_no_verdict():
    """The method's runs are the scratch runs: every case-level difference is 0 and p = 1, raw and
    adjusted. The CI still holds the run-to-run spread (each arm's seeds are resampled on their own), so
    it straddles 0: "inconclusive". With one seed per arm it collapses to [0, 0], which excludes any gain:
    "not supported" (the verdict's rule for no change at all)."""
    for seeds, expected in (((0, 1, 2), "inconclusive"), ((0,), "not supported")):
        evals = _study({}, np.random.default_rng(12), seeds=seeds, seed_sd=0.03)
        twin = evals[evals["method"] == "scratch"].assign(method="logits", model="logits_w0.4M")
        row = dice_claims(pd.concat([evals, twin], ignore_index=True), n_boot=1000).iloc[0]
        assert row["p_value"] == 1.0 and row["p_holm"] == 1.0 and row["mean_diff"] == 0.0
        assert row["verdict"] == expected, seeds
        assert row["ci_low"] < 0 < row["ci_high"] if len(seeds) > 1 else row["ci_low"] == row["ci_high"] == 0.0


def test_runs_missing_a_case_are_an_error_naming_the_run():
    evals = _study({"logits": 0.05}, np.random.default_rng(8))
    evals = evals[~((evals["method"] == "logits") & (evals["seed"] == 2) & (evals["case"] == "0003"))]
    with pytest.raises(ValueError, match=r"logits at width 0.4M, seed 2: no values for cases \['0003'\]"):
        dice_claims(evals, n_boot=100)


def test_context_claims_take_the_case_as_unit():
    rows = []
    rng = np.random.default_rng(0)
    for method, share in (("scratch", 0.1), ("logits", 0.2)):
        for seed in (0, 1, 2):
            for case in range(6):
                for i in range(10):
                    rows.append({"model": method, "method": method, "width": "0.4M", "seed": seed,
                                 "case": f"{case:04d}", "slice": i, "organ": "liver",
                                 "outside_mass": share + 0.02 * case + rng.normal(0, 0.01)})
    context = pd.DataFrame(rows)
    claims = context_claims(context, n_boot=2000)
    assert len(claims) == 1 and claims.iloc[0]["verdict"] == "supported"
    assert claims.iloc[0]["n"] == 6 and claims.iloc[0]["unit"] == "validation case"
    assert claims.iloc[0]["mean_diff"] == pytest.approx(0.1, abs=0.01)
    assert np.isnan(claims.iloc[0]["teacher_mean"])  # no Grad-CAM of the teacher in this table
    one_case = context_claims(context[context["case"] == "0000"], n_boot=500).iloc[0]
    assert one_case["n"] == 1 and one_case["verdict"] == "inconclusive"
    # a run that predicts none of case 0003's organs has no Grad-CAM value there: the case is left out
    # of the pairing (for both arms), and the note says so
    blank = context.copy()
    blank.loc[(blank["method"] == "scratch") & (blank["seed"] == 1) & (blank["case"] == "0003"), "outside_mass"] = np.nan
    left_out = context_claims(blank, n_boot=500).iloc[0]
    assert left_out["n"] == 5 and "1 case(s) left out" in left_out["note"]


def _shifted_twin(evals: pd.DataFrame, shift: float) -> pd.DataFrame:
    """``evals`` with a "logits" student that is scratch's runs plus ``shift`` Dice everywhere: its CI is the
    CI of scratch against itself moved by exactly ``shift``."""
    scratch = evals[evals["method"] == "scratch"]
    twin = scratch.assign(method="logits", model="logits_w0.4M")
    twin.loc[twin["metric"] == "dice", "value"] += shift
    return pd.concat([evals, twin], ignore_index=True)


def test_a_verdict_whose_ci_end_sits_near_zero_is_fragile():
    """A student that is scratch plus a constant: its CI is scratch-against-itself's moved by the constant, so
    the constant puts the CI's lower end where wanted, in half-widths h of the CI. Every case improves by the
    constant, so p = 1/64 on 6 cases and the verdict is "supported" once the CI clears 0: 0.1 h above 0 is a
    fragile verdict (margin 0.1), 2 h above it a firm one (margin 2)."""
    evals = _study({}, np.random.default_rng(12), seed_sd=0.03)
    null = dice_claims(_shifted_twin(evals, 0.0), n_boot=1000).iloc[0]
    half = (null["ci_high"] - null["ci_low"]) / 2
    assert null["verdict"] == "inconclusive" and null["margin"] == pytest.approx(
        min(-null["ci_low"], null["ci_high"]) / half)
    for above, fragile in ((0.1, True), (2.0, False)):
        row = dice_claims(_shifted_twin(evals, -null["ci_low"] + above * half), n_boot=1000).iloc[0]
        assert row["verdict"] == "supported" and row["p_holm"] == pytest.approx(1 / 64)
        assert row["ci_low"] == pytest.approx(above * half) and row["margin"] == pytest.approx(above)
        assert row["fragile"] is fragile or row["fragile"] == fragile
    down = dice_claims(_shifted_twin(evals, -null["ci_high"] - 0.1 * half), n_boot=1000).iloc[0]
    assert down["verdict"] == "not supported" and down["margin"] == pytest.approx(0.1) and down["fragile"]


def test_every_verdict_carries_its_margin():
    evals = _study({"logits": 0.08, "latent": -0.08, "hlfd": 0.0}, np.random.default_rng(7))
    table = dice_claims(evals, n_boot=2000)
    assert list(table.columns[:5]) == ["family", "claim", "verdict", "margin", "fragile"]
    for row in table.to_dict("records"):
        assert row["margin"] == pytest.approx(verdict_margin(row["verdict"], row["ci_low"], row["ci_high"]))
        assert row["fragile"] == (row["margin"] < FRAGILE_MARGIN)
    logits = table.set_index("method").loc["logits"]
    assert logits["margin"] > 1 and not logits["fragile"]  # a clear gain: the CI clears 0 by over a half-width


def _two_students(gains: dict, rng: np.random.Generator, n_cases: int = 8) -> pd.DataFrame:
    """Synthetic evaluations of a transformer student ("tsmall") and a CNN student ("0.4M"), each with
    scratch and the methods of ``gains`` (method -> (tsmall's true gain, 0.4M's true gain)), 3 seeds."""
    frames = []
    for k, width in enumerate(("tsmall", "0.4M")):
        study = _study({m: g[k] for m, g in gains.items()}, rng, n_cases=n_cases).replace({"0.4M": width})
        study["model"] = study["method"] + "_w" + study["width"]
        frames.append(study if k == 0 else study[study["method"] != "teacher"])
    return pd.concat(frames, ignore_index=True)


def test_the_gain_gap_compares_each_students_gain_over_its_own_scratch():
    evals = _two_students({"logits": (0.10, 0.02), "latent": (0.0, 0.08)}, np.random.default_rng(21))
    table = dice_claims(evals, n_boot=2000, compare_students=[("tsmall", "0.4M")])
    assert len(table) == 4 + 2  # method vs scratch per student, then one gap per method
    gaps = table[table["preset"] == "tsmall vs 0.4M"].set_index("method")
    assert gaps.index.tolist() == ["logits", "latent"]
    dice = evals[(evals["metric"] == "dice") & (evals["method"] != "teacher")]
    per_case = dice.groupby(["method", "width", "seed", "case"])["value"].mean().groupby(
        ["method", "width", "case"]).mean()  # each model's seed mean per case
    for method in ("logits", "latent"):
        gain = {w: per_case[(method, w)] - per_case[("scratch", w)] for w in ("tsmall", "0.4M")}
        assert gaps.loc[method, "mean_diff"] == pytest.approx((gain["tsmall"] - gain["0.4M"]).mean())
        assert f"tsmall's gain over its scratch {gain['tsmall'].mean():+.3f}, 0.4M's gain over its scratch {gain['0.4M'].mean():+.3f}" \
            in gaps.loc[method, "note"]
    logits, latent = gaps.loc["logits"], gaps.loc["latent"]
    assert logits["claim"] == "tsmall gains more from logits than 0.4M (each over its own scratch)"
    assert logits["verdict"] == "supported" and latent["verdict"] == "not supported"  # gaps +0.08 and -0.08
    assert logits["mean_diff"] == pytest.approx(0.08, abs=0.03) and latent["mean_diff"] == pytest.approx(-0.08, abs=0.03)
    assert logits["seeds"] == "3 vs 3 vs 3 vs 3" and logits["n"] == 8 and logits["unit"] == "test case"
    assert logits["quantity"] == "test Dice ((tsmall: method - scratch) - (0.4M: method - scratch))"
    assert pd.isna(logits["params"]) and np.isnan(logits["multiplier"]) and np.isnan(logits["method_mean"])
    assert logits["diverged_runs"] == "0/3 vs 0/3"
    # one family: Holm over all six claims
    assert logits["p_value"] < 0.01 and latent["p_value"] > 0.9
    assert table["p_holm"].tolist() == pytest.approx(holm(table["p_value"].to_numpy()).tolist())
    alone = dice_claims(evals, n_boot=2000)
    assert len(alone) == 4 and not alone["preset"].str.contains(" vs ").any()  # without the option, no gap


@pytest.mark.parametrize("pair, message", [
    (("tsmall", "1.5"), r"report.compare_students: no student '1.5' in the evaluations \(students: tsmall, 0.4M\)"),
    (("tsmall", "tsmall"), "compares student 'tsmall' with itself"),
])
def test_a_gain_gap_between_unknown_students_is_an_error_naming_the_key(pair, message):
    evals = _two_students({"logits": (0.1, 0.0)}, np.random.default_rng(22), n_cases=6)
    with pytest.raises(ValueError, match=message):
        dice_claims(evals, n_boot=100, compare_students=[pair])


def _full_config(patch: dict) -> dict:
    cfg = merge(default_config(), copy.deepcopy(patch))
    validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"), set_default=True)
    return cfg


@pytest.mark.parametrize("patch, message", [
    ({"report": {"compare_students": [["0.4M", "x2"]]}},
     ("config key report.compare_students: ['x2'] not among the students (students.widths and students.models: "
      "['0.4M', '1.5'])")),
    ({"report": {"compare_students": [["1.5", "1.5"]]}}, "['1.5', '1.5'] compares a student with itself"),
    ({"report": {"compare_students": [["0.4M", "1.5"]]}, "students": {"methods": ["logits"]}},
     "add scratch to students.methods"),
])
def test_compare_students_is_checked_before_any_training(patch, message):
    check_config(_full_config({"report": {"compare_students": [["0.4M", "1.5"]]}}))  # two students: fine
    with pytest.raises(ValueError) as info:
        check_config(_full_config(patch))
    assert message in str(info.value)


def test_the_homogeneous_study_claims_the_heterogeneous_gap(tmp_path):
    """workflow/configs/homogeneous.yaml: a transformer and a CNN student of about the same size, and the
    workflow's verdict job told to compare their gains."""
    from hkd.models import build_model, count_parameters

    configfile = REPO / "workflow" / "configs" / "homogeneous.yaml"
    cfg = yaml.safe_load(configfile.read_text())
    assert cfg["report"]["compare_students"] == [["transunet-s", "0.4M"]]
    sizes = [count_parameters(build_model({**cfg["students"]["models"]["transunet-s"], "img_size": 48})),
             count_parameters(build_model({"arch": "squeezeunet", "width": "0.4M"}))]
    assert abs(sizes[0] - sizes[1]) < 0.01 * sizes[1], sizes
    dry = helpers.snakemake(REPO, "-n", "-p", "--cores", "2", "--configfile", str(configfile), "--config",
                            f"out={tmp_path}/out", "--", f"{tmp_path}/out/hypotheses.csv")
    assert dry.returncode == 0, dry.stderr[-3000:]
    (command,) = [line for line in dry.stdout.splitlines() if "hkd hypotheses" in line]
    assert " --compare-students transunet-s 0.4M " in command
    for run in ("latent_wtransunet-s_s2", "logits_w0.4M_s0", "scratch_wtransunet-s_s1"):
        assert f"eval/students/{run}.csv" in command


def test_hypotheses_command_writes_the_unit_n_mde_and_small_p_values(tmp_path):
    evals = _study({"logits": 0.08}, np.random.default_rng(7), n_cases=12)
    paths = []
    for (method, seed), run in evals.groupby(["method", "seed"]):
        paths.append(tmp_path / f"{method}_{seed}.csv")
        run.to_csv(paths[-1], index=False)
    out = {k: tmp_path / f"hypotheses.{k}" for k in ("csv", "md", "html")}
    assert main(["hypotheses", "--evals", *map(str, paths), "--seed", "0", "--out-csv", str(out["csv"]),
                 "--out-md", str(out["md"]), "--out-html", str(out["html"])]) == 0
    table = pd.read_csv(out["csv"], dtype={"preset": str})
    assert table.iloc[0]["n"] == 12 and table.iloc[0]["p_value"] < 0.001 and table.iloc[0]["p_holm"] < 0.001
    assert list(table.columns) == VERDICT_COLUMNS and table["fragile"].dtype == bool
    md, page = out["md"].read_text(), out["html"].read_text()
    for text in (md, page):  # the columns and how they are defined
        assert "| margin " in text or "<th>margin</th>" in text
        assert "| fragile " in text or "<th>fragile</th>" in text
        assert "half-widths" in text and f"margin below {FRAGILE_MARGIN}" in text
    assert "statistical unit is the patient" in md and "| test case " in md
    for text in (md, page):
        assert "one-sided Wilcoxon" in text and "Holm" in text and "p_holm" in text
    for text in (md, page):
        assert "<0.001" in text.replace("&lt;", "<") and "| 0.000 " not in text and ">0.000<" not in text


def test_hypotheses_command_compares_two_students(tmp_path):
    evals = _two_students({"logits": (0.1, 0.0)}, np.random.default_rng(23), n_cases=6)
    paths = []
    for (method, width), run in evals.groupby(["method", "width"]):
        paths.append(tmp_path / f"{method}_{width}.csv")
        run.to_csv(paths[-1], index=False)
    out = {k: tmp_path / f"hypotheses.{k}" for k in ("csv", "md", "html")}
    args = ["hypotheses", "--evals", *map(str, paths), "--out-csv", str(out["csv"]), "--out-md", str(out["md"]),
            "--out-html", str(out["html"])]
    assert main([*args, "--compare-students", "tsmall", "0.4M"]) == 0
    table = pd.read_csv(out["csv"], dtype={"preset": str})
    assert sorted(table["preset"]) == ["0.4M", "tsmall", "tsmall vs 0.4M"]
    assert "student reads 'a vs b'" in out["md"].read_text()
    assert main([*args, "--compare-students", "tsmall", "basicunet"]) == 1  # an error naming the key


@pytest.mark.slow
def test_the_workflows_verdict_table_has_the_margins(default_study):
    table = pd.read_csv(default_study.out / "hypotheses.csv", dtype={"preset": str})
    assert {"margin", "fragile"} <= set(table.columns)
    for row in table.to_dict("records"):
        can_support = "n too small" not in str(row["note"])
        assert row["margin"] == pytest.approx(verdict_margin(row["verdict"], row["ci_low"], row["ci_high"],
                                                             can_support), nan_ok=True)
    assert "| margin " in (default_study.out / "hypotheses.md").read_text()


# --------------------------------------------------------------------------- tables
def _pairs(rows) -> pd.DataFrame:
    """Tidy evaluations from (method, width, seed, case, organ, empty, dice, hd95_mm) tuples."""
    out = []
    for method, width, seed, case, organ, empty, dice, hd in rows:
        for metric, value in (("dice", dice), ("iou", dice), ("hd95_mm", hd), ("hd95_vox", hd * 2)):
            out.append({"model": f"{method}_w{width}", "method": method, "width": width,
                        "params": 1000 if width == "teacher" else 423961, "seed": seed, "status": "completed",
                        "case": case, "organ": organ, "empty": empty, "metric": metric, "value": value})
    return pd.DataFrame(out)


def test_hd95_of_an_empty_prediction_is_left_out_and_counted():
    evals = _pairs([("scratch", "0.4M", 0, "a", "liver", "neither", 0.9, 10.0),
                    ("scratch", "0.4M", 0, "b", "liver", "pred_empty", 0.0, 0.0),  # missed: TransUNet's HD95 0
                    ("scratch", "0.4M", 0, "a", "spleen", "neither", 0.8, 4.0),
                    ("scratch", "0.4M", 0, "b", "spleen", "both_empty", 0.0, 0.0),  # no spleen in case b
                    ("scratch", "0.4M", 1, "a", "liver", "neither", 0.9, 12.0),
                    ("scratch", "0.4M", 1, "b", "liver", "neither", 0.7, 20.0),
                    ("scratch", "0.4M", 1, "a", "spleen", "neither", 0.8, 6.0),
                    ("scratch", "0.4M", 1, "b", "spleen", "gt_empty", 1.0, 0.0)])
    runs = run_means(evals).set_index("seed")
    assert runs.loc[0, "hd95_mm"] == pytest.approx((10.0 + 4.0) / 2)  # not (5 + 4) / 2 with the miss as 0
    assert runs.loc[0, "dice"] == pytest.approx((0.45 + 0.8) / 2)  # the miss counts 0, the absent spleen not
    assert runs.loc[0, "hd95_vox_transunet"] == pytest.approx((10.0 + 4.0) / 2)  # TransUNet: every pair, 0s
    assert runs.loc[0, "empty_pred"] == 1 and runs.loc[0, "gt_pairs"] == 3
    assert runs.loc[1, "hd95_mm"] == pytest.approx((16.0 + 6.0) / 2) and runs.loc[1, "empty_pred"] == 0
    summary = summary_table(evals).iloc[0]
    assert summary["empty_pred"] == "1, 0" and summary["gt_pairs"] == "3"
    organs = organ_table(evals).set_index("organ")
    assert organs.loc["liver", "empty_pred"] == "1, 0" and organs.loc["liver", "gt_cases"] == "2"
    assert organs.loc["liver", "hd95_mm_mean"] == pytest.approx((10.0 + 16.0) / 2)


def test_study_tables_average_over_seeds_and_name_the_width():
    wider = _study({"logits": 0.0}, np.random.default_rng(1), seeds=(0, 1)).replace({"0.4M": "1.5"})
    evals = pd.concat([_study({"logits": 0.2}, np.random.default_rng(0)), wider[wider["method"] != "teacher"]])
    runs = run_means(evals)
    assert len(runs) == 1 + 2 * 3 + 2 * 2  # the teacher, then students: methods x seeds per width
    summary = summary_table(evals)
    at = summary.set_index(["method", "multiplier"])
    assert at.loc[("logits", 1.0), "seeds"] == 3 and at.loc[("logits", 1.0), "preset"] == "0.4M"
    assert at.loc[("logits", 1.5), "preset"] == "" and at.loc[("logits", 1.5), "params"] == 423961
    assert at.loc[("logits", 1.0), "dice_mean"] > at.loc[("scratch", 1.0), "dice_mean"]
    assert set(organ_table(evals)["organ"]) == set(ORGANS)
    assert "| logits " in to_markdown(summary)


def test_a_single_seed_has_no_standard_deviation():
    evals = _study({}, np.random.default_rng(2))
    summary = summary_table(evals).set_index("method")
    assert np.isnan(summary.loc["teacher", "dice_std"]) and summary.loc["scratch", "dice_std"] > 0
    teacher_line = next(line for line in to_markdown(summary.reset_index()).splitlines() if "| teacher" in line)
    assert "n/a" in teacher_line and "0.000" not in teacher_line
    assert np.isnan(organ_table(evals).set_index("method").loc["teacher", "dice_std"]).all()


def test_html_tables_scroll_instead_of_being_cut_off():
    page = to_html(summary_table(_study({"logits": 0.05}, np.random.default_rng(0))), "Summary")
    assert "<div class='scroll'><table" in page and ".scroll{overflow-x:auto" in page


def test_each_chain_is_compared_with_the_same_method_distilled_directly():
    """A chain (latent@latent_w1.5) 0.1 above scratch and direct latent at scratch: besides each against
    scratch, the table claims the chain beats direct latent, with the difference of the two arms' case means."""
    evals = _study({"latent": 0.0, "latent@latent_w1.5": 0.1, "logits@logits_w1.5": 0.0}, np.random.default_rng(5),
                   n_cases=8)
    table = dice_claims(evals, n_boot=2000)
    assert table["method"].tolist() == ["latent", "latent@latent_w1.5", "logits@logits_w1.5", "latent@latent_w1.5"]
    chain = table.iloc[-1]  # logits@logits_w1.5 has no direct logits run: no chain claim for it
    assert chain["claim"] == "the chain latent@latent_w1.5 beats direct latent"
    assert chain["quantity"] == "test Dice (chain - direct)" and chain["verdict"] == "supported"
    per_case = evals[evals["metric"] == "dice"].groupby(["method", "case"])["value"].mean()
    difference = (per_case["latent@latent_w1.5"] - per_case["latent"]).mean()
    assert chain["mean_diff"] == pytest.approx(difference)
    assert f"chain over direct {difference:+.3f}" in chain["note"]
