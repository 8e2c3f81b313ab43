"""The external cohort (data.external): the phantom on another scanner, its all-test split, the shift claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from hkd.data.phantom import generate_case
from hkd.data.phantom.anatomy import SCANNER_DEFAULTS
from hkd.data.split import make_split, split_argument
from hkd.errors import DataError
from hkd.evaluate.hypotheses import shift_claims, study_claims
from hkd.evaluate.stats import cohort_shift_bootstrap_ci, mann_whitney_p

SHIFTED = {"noise_hu": (30.0, 30.0), "grain": 1.0, "contrast": 0.85, "hu_offset": 20.0}


@pytest.fixture(scope="module")
def twins():
    """One patient acquired on the study's scanner and on another."""
    return generate_case(3, 5, 64, 12), generate_case(3, 5, 64, 12, scanner=SHIFTED)


def test_the_default_scanner_is_the_study_phantom():
    plain, same = generate_case(2, 1, 48, 6), generate_case(2, 1, 48, 6, scanner=dict(SCANNER_DEFAULTS))
    assert all(np.array_equal(a, b) for a, b in zip(plain, same))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['gain'\]"):
        generate_case(2, 1, 48, 6, scanner={"gain": 2})


def test_another_scanner_sees_the_same_anatomy_with_its_contrast_offset_and_noise(twins):
    (image, label, affine), (shifted, label2, affine2) = twins
    assert np.array_equal(label, label2) and np.array_equal(affine, affine2)
    liver = ndimage.binary_erosion(label == 6, iterations=2)
    calibrated = generate_case(3, 5, 64, 12, scanner={"contrast": 0.85, "hu_offset": 20.0})[0]
    # contrast about water, then the offset (within the rounding to whole HU)
    assert np.abs(calibrated[liver] - (0.85 * image[liver] + 20)).max() <= 1
    # more noise spreads the pixel-to-pixel differences inside the organ; a softer kernel (grain) narrows them
    rough = lambda img: np.std(np.diff(img.astype(float), axis=0)[liver[1:] & liver[:-1]])  # noqa: E731
    noisier = generate_case(3, 5, 64, 12, scanner={"noise_hu": (30.0, 30.0)})[0]
    softer = generate_case(3, 5, 64, 12, scanner={"grain": 1.5})[0]
    assert rough(noisier) > 1.3 * rough(image) > 1.3 * 1.3 * rough(softer)
    assert not np.array_equal(shifted, image)


def test_an_external_split_makes_every_case_a_test_case():
    split = make_split(["b", "a", "c"], "external")
    assert split == {"train": [], "val": [], "test": ["a", "b", "c"]}
    assert split_argument({"preset": "external", **split}, "--split") == split
    with pytest.raises(DataError, match="the 'train' part is empty"):  # only an external split may lack them
        split_argument(split, "--split")
    with pytest.raises(DataError, match="external cohort's 'val' part must be empty"):
        split_argument({"preset": "external", "train": [], "val": ["a"], "test": ["b"]}, "--split")
    with pytest.raises(DataError, match="no cases"):
        make_split([], "external")


def test_the_shift_bootstrap_centres_on_the_observed_change():
    rng = np.random.default_rng(0)
    inside = [rng.normal(0.7, 0.05, (8, 3)), rng.normal(0.7, 0.05, (8, 3))]
    outside = [rng.normal(0.65, 0.05, (6, 3)), rng.normal(0.55, 0.05, (6, 3))]
    mean, low, high = cohort_shift_bootstrap_ci(inside, outside, [1, -1], n_boot=2000, seed=1)
    want = (outside[0].mean() - inside[0].mean()) - (outside[1].mean() - inside[1].mean())
    assert mean == pytest.approx(want) and low < mean < high and low > 0
    with pytest.raises(ValueError, match="same seeds on both cohorts"):
        cohort_shift_bootstrap_ci(inside, [outside[0], outside[1][:, :2]], [1, -1])
    assert mann_whitney_p([3, 4, 5], [0, 1, 2]) == pytest.approx(0.05) and np.isnan(mann_whitney_p([], [1]))


def _evals(drop: dict, rng, n_cases: int = 8, cohort: str = "internal") -> pd.DataFrame:
    """Tidy Dice rows: per case a shared effect, every model 0.7 on the internal cohort, minus ``drop[method]``
    on the external one (new patients: their own case ids)."""
    rows = []
    case_eff = rng.normal(0, 0.05, n_cases)
    for method, seeds in (("teacher", (0,)), ("scratch", (0, 1, 2)), ("logits", (0, 1, 2))):
        width = "teacher" if method == "teacher" else "0.4M"
        for seed in seeds:
            for c in range(n_cases):
                value = 0.7 + case_eff[c] - (drop[method] if cohort == "external" else 0) + rng.normal(0, 0.01)
                rows.append({"model": f"{method}_w{width}", "method": method, "width": width, "params": 1000,
                             "seed": seed, "status": "completed", "case": f"{cohort[0]}{c:03d}", "organ": "liver",
                             "empty": "neither", "metric": "dice", "value": value})
    return pd.DataFrame(rows)


def test_a_student_that_keeps_its_dice_under_the_shift_is_supported_and_one_that_loses_more_is_not():
    rng = np.random.default_rng(3)
    inside = _evals({}, rng)
    for logits_drop, want in ((0.02, "supported"), (0.2, "not supported")):
        outside = _evals({"teacher": 0.05, "scratch": 0.1, "logits": logits_drop}, rng, cohort="external")
        row = shift_claims(inside, outside, n_boot=2000).iloc[0]
        assert row["claim"] == "logits loses less Dice than scratch under the scanner shift"
        assert row["verdict"] == want and row["n"] == 16
        assert row["mean_diff"] == pytest.approx(0.1 - logits_drop, abs=0.01)
        assert "Dice drop internal to external" in row["note"]
    table = study_claims(inside, external=outside, n_boot=500)
    assert set(table["family"]) == {"hypotheses", "beyond Dice"}
    beyond = table[table["family"] == "beyond Dice"]
    assert list(beyond["claim"]) == ["logits loses less Dice than scratch under the scanner shift"]
