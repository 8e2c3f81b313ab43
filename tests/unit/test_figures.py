"""Figures: exact pixel sizes, deterministic bytes, the catalog of study figures, and the whole study-figure step
end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CLASSES
from helpers import REPO, copy_tracked_files, snakemake
from matplotlib.image import imread

from hkd.data.dataset import SliceSet
from hkd.explain.context import context_table
from hkd.figures.attributions import attribution_grid
from hkd.figures.catalog import Figure, check_captions, read_catalog
from hkd.figures.curves import training_curves
from hkd.figures.gradients import gradient_ratios, ratio_terms
from hkd.figures.latent import latent_pca, pca_2d
from hkd.figures.make import make_study_figures
from hkd.figures.overlays import prediction_overlays
from hkd.figures.runs import parse_run
from hkd.figures.scaling import dice_vs_params
from hkd.figures.slices import cell_organs, select_slices
from hkd.models import build_model

S = 32
SIZE, DPI = (3.0, 2.0), 100
TEACHER = {"arch": "transunet", "img_size": S, "num_classes": 9, "hidden_size": 48, "num_layers": 1,
           "num_heads": 4, "mlp_dim": 96, "block_units": [1, 1, 1], "resnet_width": 8,
           "decoder_channels": [16, 16, 8, 8], "latent_channels": 16}
STUDENT = {"arch": "squeezeunet", "width": 0.25, "num_classes": 9}


def _label(organs: dict[int, tuple[slice, slice]]) -> np.ndarray:
    label = np.zeros((S, S), np.uint8)
    for c, (r, col) in organs.items():
        label[r, col] = c
    return label


def _pixels(path) -> tuple[int, int]:
    assert path.stat().st_size > 0
    return imread(path).shape[:2]


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    image = rng.random((S, S)).astype(np.float32)
    truth = _label({6: (slice(2, 14), slice(2, 20)), 1: (slice(18, 26), slice(20, 28))})
    return image, truth


def test_prediction_overlays_size_and_determinism(scene, tmp_path):
    image, truth = scene
    preds = {"teacher": truth, "scratch_w0.4M": np.roll(truth, 3, axis=1)}
    a = prediction_overlays(tmp_path / "a.png", image, truth, preds, CLASSES, size=SIZE, dpi=DPI)
    b = prediction_overlays(tmp_path / "b.png", image, truth, preds, CLASSES, size=SIZE, dpi=DPI)
    assert _pixels(a) == (200, 300)
    assert a.read_bytes() == b.read_bytes()
    rows = prediction_overlays(tmp_path / "rows.png", np.stack([image, image]), np.stack([truth, truth]),
                               {k: np.stack([v, v]) for k, v in preds.items()}, CLASSES, size=(4, 3), dpi=DPI)
    assert _pixels(rows) == (300, 400)
    with pytest.raises(ValueError):
        prediction_overlays(tmp_path / "bad.png", image, truth, {"x": truth[:8]}, CLASSES)


def test_attribution_grid_size(scene, tmp_path):
    image, truth = scene
    rng = np.random.default_rng(1)
    maps = {m: {o: rng.random((S, S)) for o in ("liver", "spleen")} for m in ("teacher", "logits_w0.4M")}
    maps["teacher"]["liver"][:] = 0  # an all-zero map draws nothing
    out = attribution_grid(tmp_path / "g.png", image, maps, "Grad-CAM", outlines={"liver": truth == 6},
                           size=SIZE, dpi=DPI)
    assert _pixels(out) == (200, 300)


def test_latent_pca_size_and_components(tmp_path):
    rng = np.random.default_rng(2)
    direction = np.array([3.0, 0.0, 0.0, 0.0])
    z = rng.normal(size=(40, 4)) * 0.1 + rng.normal(size=(40, 1)) * direction
    scores, ratio = pca_2d(z)
    assert scores.shape == (40, 2) and ratio[0] > 0.9 and ratio.sum() <= 1 + 1e-9
    np.testing.assert_allclose(np.abs(scores[:, 0]), np.abs(z[:, 0] - z[:, 0].mean()), rtol=0.05, atol=0.1)
    np.testing.assert_array_equal(pca_2d(-z)[0], pca_2d(-z)[0])
    labels = rng.integers(0, 3, 40)
    out = latent_pca(tmp_path / "p.png", {"teacher": z, "student": z[:, :2]}, labels, CLASSES, size=SIZE, dpi=DPI)
    assert _pixels(out) == (200, 300)
    assert pca_2d(np.ones((5, 3)))[0].tolist() == [[0.0, 0.0]] * 5  # no variance: all zero, no NaN


def test_training_curves_and_dice_vs_params_sizes(tmp_path):
    logs = {run: pd.DataFrame({"epoch": [1, 2, 3], "loss": [1.0, 0.7, 0.5 + k], "val_dice": [0.2, 0.4, np.nan]})
            for k, run in enumerate(("scratch_w0.4M", "logits_w0.4M"))}
    assert _pixels(training_curves(tmp_path / "c.png", logs, size=SIZE, dpi=DPI)) == (200, 300)
    table = pd.DataFrame({"method": ["scratch", "scratch", "logits", "logits"],
                          "params": [4e5, 4e6, 4e5, 4e6], "dice_mean": [0.6, 0.7, 0.65, 0.72],
                          "dice_std": [0.05, 0.04, 0.05, np.nan]})
    assert _pixels(dice_vs_params(tmp_path / "d.png", table, 0.77, size=SIZE, dpi=DPI)) == (200, 300)
    assert _pixels(dice_vs_params(tmp_path / "e.png", table, None, size=SIZE, dpi=DPI)) == (200, 300)
    with pytest.raises(ValueError):
        dice_vs_params(tmp_path / "f.png", table.drop(columns="dice_std"), None)


def test_runs_described_as_data_draw_what_their_names_would(tmp_path):
    """Runs given as data (the workflow's --runs) draw the same curves as the names parse_run reads; a name
    that parse_run cannot read is drawn from its description."""
    logs = {name: pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5 + k], "val_dice": [0.2, 0.4],
                                "gradnorm_seg": [1.0, 1.0], "gradnorm_kd": [0.5, 2.0]})
            for k, name in enumerate(("logits_w0.4M_s0", "logits_w0.4M_s1"))}
    described = {name: {"model": "logits_w0.4M", "method": "logits", "width": "0.4M", "seed": s}
                 for s, name in enumerate(logs)}
    for draw in (training_curves, gradient_ratios):
        by_name, by_data = draw(tmp_path / "a.png", logs).read_bytes(), draw(tmp_path / "b.png", logs, runs=described)
        assert by_data.read_bytes() == by_name
    renamed = {f"run {i}": log for i, log in enumerate(logs.values())}
    assert gradient_ratios(tmp_path / "c.png", renamed, runs=dict(zip(renamed, described.values()))).read_bytes() \
        == gradient_ratios(tmp_path / "d.png", logs).read_bytes()


CATALOG = read_catalog()
NEW_FIGURE = '''"""Mean test Dice of every model of the summary, as bars."""

from hkd.figures.catalog import Figure
from hkd.figures.style import new_figure, save_figure

FIGURE = Figure(function="dice_bars", inputs=("summary",), caption="dice_bars.rst")


def dice_bars(context, out_png):
    fig = new_figure((3.0, 2.0))
    fig.subplots().bar(context.summary["method"], context.summary["dice_mean"])
    return save_figure(fig, out_png)
'''


def test_the_catalog_lists_every_study_figure_module_with_its_function_and_caption():
    import importlib

    from hkd.figures.catalog import INPUTS
    from hkd.figures.study import drawing_function

    modules = sorted(p.stem for p in (REPO / "hkd" / "figures" / "study").glob("[!_]*.py"))
    assert [f.name for f in CATALOG] == modules
    for figure in CATALOG:
        assert callable(drawing_function(figure)), figure
        declared = importlib.import_module(f"hkd.figures.study.{figure.name}").FIGURE  # what the module runs
        assert (declared.function, declared.inputs, declared.caption) == (figure.function, figure.inputs,
                                                                          figure.caption)
        assert set(figure.inputs) <= set(INPUTS) and figure.file == f"{figure.name}.png"
    check_captions(CATALOG, REPO / "workflow" / "report")
    with pytest.raises(ValueError, match=r"no caption file for the figure\(s\) dice_vs_cost \(dice_vs_cost.rst\), "
                                         r"dice_vs_params \(dice_vs_params.rst\)"):
        check_captions(CATALOG, REPO / "workflow" / "schemas")


@pytest.mark.parametrize("entry, error", [
    ("", "declares its entry once"),
    ("FIGURE = dict(function='draw')", "must be a Figure"),
    ("FIGURE = Figure('draw', ('logs',), 'x.rst')", "by keyword"),
    ("FIGURE = Figure(function='draw', inputs=('logs',))", "exactly the fields"),
    ("FIGURE = Figure(function='draw', inputs=('weights',), caption='x.rst')", r"unknown input\(s\) \['weights'\]"),
    ("FIGURE = Figure(function='draw', inputs='logs', caption='x.rst')", "tuple of names"),
    ("FIGURE = Figure(function='plot', inputs=('logs',), caption='x.rst')", "'plot' is not a function of x.py"),
    ("FIGURE = Figure(function='draw', inputs=('logs',), caption=CAPTION)", "literal values"),
    ("FIGURE = Figure(function='draw', inputs=('logs',), caption='x.txt')", "caption must name an .rst"),
])
def test_a_bad_catalog_entry_names_its_file(tmp_path, entry, error):
    (tmp_path / "x.py").write_text(f"{entry}\n\n\ndef draw(context, out_png):\n    return out_png\n")
    with pytest.raises(ValueError, match=error) as raised:
        read_catalog(tmp_path)
    assert str(tmp_path / "x.py") in str(raised.value)
    (tmp_path / "x.py").write_text("FIGURE = Figure(function='draw', inputs=('logs',), caption='x.rst')\n\n\n"
                                   "def draw(context, out_png):\n    return out_png\n")
    assert read_catalog(tmp_path) == (Figure("draw", ("logs",), "x.rst", "x"),)


def test_a_new_figure_is_its_module_and_its_caption(tmp_path):
    """Two new files in a copy of the project: the catalog, the figures rule's outputs and code, the report's
    caption and ``make_study_figures`` all take the new figure."""
    root = copy_tracked_files(tmp_path / "repo")
    (root / "hkd" / "figures" / "study" / "dice_bars.py").write_text(NEW_FIGURE)
    (root / "workflow" / "report" / "dice_bars.rst").write_text("Mean test Dice of every model, as bars.\n")
    catalog = read_catalog(root / "hkd" / "figures" / "study")
    assert [f.name for f in catalog] == sorted([*(f.name for f in CATALOG), "dice_bars"])

    plan = snakemake(root, "-n", "figures")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    job = plan.stdout[plan.stdout.index("rule figures:"):].split("\n")
    inputs = next(line for line in job if line.strip().startswith("input:"))
    outputs = next(line for line in job if line.strip().startswith("output:"))
    assert "hkd/figures/study/dice_bars.py" in inputs  # its code: editing it reruns the figures
    assert {f"results/default/figures/{f.file}" for f in catalog} <= set(outputs.split(": ", 1)[1].split(", "))

    (root / "workflow" / "report" / "dice_bars.rst").unlink()  # a figure without its caption is refused
    plan = snakemake(root, "-n", "figures")
    assert plan.returncode != 0 and "dice_bars (dice_bars.rst)" in plan.stdout + plan.stderr

    prep = tmp_path / "prep"
    prep.mkdir()
    (prep / "dataset.json").write_text(json.dumps({"classes": CLASSES, "image_size": S}))
    pd.DataFrame({"method": ["teacher", "scratch"], "params": [1e5, 2e4], "dice_mean": [0.8, 0.6],
                  "dice_std": [0.02, 0.05]}).to_csv(tmp_path / "summary.csv", index=False)
    draw = ("import sys, hkd; from hkd.figures.make import make_study_figures; "
            "assert hkd.__file__.startswith(sys.argv[1]), hkd.__file__; "
            "print([p.name for p in make_study_figures(sys.argv[2], {}, sys.argv[3], summary_csv=sys.argv[4])])")
    run = subprocess.run([sys.executable, "-c", draw, str(root), str(prep), str(tmp_path / "fig"),
                          str(tmp_path / "summary.csv")], check=False, cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == str([f.file for f in catalog if set(f.inputs) <= {"summary"}])
    assert _pixels(tmp_path / "fig" / "dice_bars.png") == (200, 300)


def test_cell_organs_label_cells_by_the_organ_they_hold():
    labels = np.zeros((1, 4, 4), np.int64)
    labels[0, :2, :2] = 3          # a whole cell of organ 3
    labels[0, 0, 2] = 5            # one pixel of four: a quarter of the cell
    labels[0, 2, 0] = 6            # in the third cell: 6 and 7 tie at one pixel each; 6 is lower
    labels[0, 3, 1] = 7
    np.testing.assert_array_equal(cell_organs(labels, (2, 2), 9, min_share=0.2), [3, 5, 6, 0])
    np.testing.assert_array_equal(cell_organs(labels, (2, 2), 9, min_share=0.3), [3, 0, 0, 0])
    # at the default study's scale (48 px, 16 px cells) a kidney of 6x6 pixels still labels its cell
    big = np.zeros((1, 48, 48), np.int64)
    big[0, 20:26, 20:26] = 2
    assert (cell_organs(big, (3, 3), 9) == 2).sum() == 1
    with pytest.raises(ValueError, match="not a multiple"):
        cell_organs(big, (5, 5), 9)


def test_run_names_give_model_and_seed():
    assert parse_run("latent_w0.4M_s1") == {"model": "latent_w0.4M", "method": "latent", "width": "0.4M", "seed": "1"}
    assert parse_run("kd_logits_w1.5_s0")["method"] == "kd_logits"
    assert parse_run("latent@latent_w1.5_w0.4M_s2") == {"model": "latent@latent_w1.5_w0.4M",
                                                        "method": "latent@latent_w1.5", "width": "0.4M", "seed": "2"}
    assert parse_run("teacher") == {"model": "teacher", "method": "teacher", "width": None, "seed": None}


def test_gradient_ratios_read_every_gradnorm_column(tmp_path):
    epochs = [1, 2, 3]
    logs = {
        "scratch_w0.4M_s0": pd.DataFrame({"epoch": epochs, "loss": [1.0, 0.8, 0.6]}),
        "logits_w0.4M_s0": pd.DataFrame({"epoch": epochs, "gradnorm_seg": [1.0, 2.0, 4.0],
                                         "gradnorm_kd_logits": [0.5, 0.5, 0.5]}),
        "logits_w1.5_s1": pd.DataFrame({"epoch": epochs, "gradnorm_seg": [1.0, 1.0, 0.0],
                                        "gradnorm_kd_logits": [20.0, 2.0, 1.0]}),
        "hlfd_w0.4M_s0": pd.DataFrame({"epoch": epochs, "gradnorm_seg": [1.0, 1.0, 1.0],
                                       "gradnorm_flfd": [0.01, 0.1, 1.0], "gradnorm_plfd": [3.0, 3.0, 3.0]}),
    }
    assert ratio_terms(logs["hlfd_w0.4M_s0"]) == ["flfd", "plfd"]
    assert ratio_terms(logs["scratch_w0.4M_s0"]) == []
    assert ratio_terms(pd.DataFrame({"gradnorm_kd_logits": [1.0]})) == []  # no reference norm: no ratio
    out = gradient_ratios(tmp_path / "g.png", logs, size=SIZE, dpi=DPI)
    assert _pixels(out) == (200, 300)
    assert gradient_ratios(tmp_path / "default.png", logs).exists()  # at its own size too
    empty = gradient_ratios(tmp_path / "none.png", {"scratch_w0.4M_s0": logs["scratch_w0.4M_s0"]}, size=SIZE, dpi=DPI)
    assert _pixels(empty) == (200, 300)  # logs without gradient norms still give a figure that says so


def test_gradient_ratios_show_every_block_of_every_run(tmp_path, monkeypatch):
    """Per-block columns of 2 widths x 3 seeds: a line per block and width (median over seeds), blocks a
    term never reaches named instead of drawn."""
    from hkd.figures import gradients

    blocks = ["enc1", "enc2", "bottleneck", "dec1", "head"]
    logs = {}
    for width in ("0.4M", "1.5"):
        for seed in range(3):
            log = {"epoch": [1, 2, 3], "gradnorm_seg": [1.0, 1.0, 1.0], "gradnorm_flfd": [0.5, 0.4, 0.3],
                   "gradnorm_plfd": [0.2, 0.2, 0.2]}
            for i, b in enumerate(blocks):
                log[f"gradnorm_seg@{b}"] = [0.5, 0.5, 0.5]
                log[f"gradnorm_flfd@{b}"] = [0.1 * (i + 1) * (seed + 1)] * 3 if b.startswith("enc") else [0.0] * 3
                log[f"gradnorm_plfd@{b}"] = [0.05 * (i + 1)] * 3 if not b.startswith("enc") else [0.0] * 3
            log["gradnorm_flfd@adapter.unify"] = [3.0] * 3
            logs[f"hlfd_w{width}_s{seed}"] = pd.DataFrame(log)
    drawn = []
    real_figure = gradients.new_figure

    def spy(*args, **kwargs):
        fig = real_figure(*args, **kwargs)
        drawn.append(fig)
        return fig

    monkeypatch.setattr(gradients, "new_figure", spy)
    monkeypatch.setattr(gradients, "save_figure", lambda fig, path: path)  # keep the figure to inspect it
    gradients.gradient_ratios(tmp_path / "blocks.png", logs)
    axes = drawn[0].axes
    assert [ax.get_title() for ax in axes[:2]] == ["hlfd: flfd", "hlfd: plfd"] and len(axes) == 4  # 2 widths
    flfd = axes[0]
    assert len(flfd.get_lines()) == 1 + 2 + 1  # the 1x line, enc1 and enc2, the whole student
    enc2 = next(line for line in flfd.get_lines() if line.get_color() == "C1")
    assert enc2.get_ydata()[0] == pytest.approx(0.2 * 2 / 0.5)  # the median over seeds 1x, 2x, 3x
    assert "0 in bottleneck, dec1, head" in [t.get_text() for t in flfd.texts]
    labels = [t.get_text() for t in drawn[0].legends[0].get_texts()]
    assert labels[:len(blocks)] == blocks and "adapter.unify" not in labels


def test_coverage_selection_spreads_over_patients():
    # case A has the three best-covered slices; the second pick must come from case B all the same
    labels = torch.zeros(5, 8, 8, dtype=torch.long)
    for row, organs in enumerate([(1, 2, 3), (1, 2, 3), (1, 2), (1,), (1, 2)]):
        for k, organ in enumerate(organs):
            labels[row, k, :] = organ
    data = SliceSet(image=torch.zeros(5, 1, 8, 8), label=labels, case=["A", "A", "A", "B", "B"],
                    index=np.array([5, 6, 7, 0, 1]))
    assert select_slices(data, "coverage", 2, 4) == [0, 4]
    assert select_slices(data, "coverage", 4, 4) == [0, 4, 1, 3]
    assert select_slices(data, [("A", 7), ("B", 0)], 2, 4) == [2, 3]


# ------------------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    prep = root / "prep"
    prep.mkdir()
    (prep / "dataset.json").write_text(json.dumps({"classes": CLASSES, "image_size": S}))
    rng = np.random.default_rng(0)
    labels = [_label({}), _label({6: (slice(2, 14), slice(2, 20))}),
              _label({6: (slice(2, 14), slice(2, 20)), 1: (slice(18, 26), slice(20, 28)),
                      7: (slice(20, 28), slice(4, 12))}),  # three organs: the best-covered slice
              _label({6: (slice(4, 12), slice(4, 12)), 1: (slice(18, 26), slice(20, 28))})]
    with h5py.File(prep / "val.h5", "w") as f:
        f["image"] = rng.random((4, S, S)).astype("f4")
        f["label"] = np.stack(labels).astype("u1")
        f.create_dataset("case", data=["0004", "0004", "0004", "0006"], dtype=h5py.string_dtype())
        f["slice"] = np.array([0, 1, 2, 0], "i4")
    models = {}
    for name, spec in (("teacher", TEACHER), ("scratch_w0.4M_s0", STUDENT), ("logits_w0.4M_s0", STUDENT)):
        torch.manual_seed(len(models))
        model = build_model(spec)
        models[name] = root / f"{name}.pt"
        torch.save({"model": model.state_dict(), "spec": json.dumps(spec)}, models[name])
    logs = {}
    for name in ("scratch_w0.4M_s0", "scratch_w0.4M_s1", "logits_w0.4M_s0", "logits_w0.4M_s1"):
        logs[name] = root / f"{name}.csv"
        log = pd.DataFrame({"epoch": [1, 2], "lr": [0.01, 0.005], "loss": [1.2, 0.9], "val_dice": [0.1, 0.3]})
        if name.startswith("logits"):
            log["gradnorm_seg"], log["gradnorm_kd_logits"] = [1.0, 0.8], [0.2, 0.3]
        log.to_csv(logs[name], index=False)
    summary = root / "summary.csv"
    pd.DataFrame({"method": ["teacher", "scratch", "logits"], "params": [1e5, 2e4, 2e4],
                  "dice_mean": [0.8, 0.6, 0.65], "dice_std": [0.02, 0.05, 0.04]}).to_csv(summary, index=False)
    return prep, models, logs, summary


def test_make_study_figures_end_to_end(study, tmp_path):
    prep, models, logs, summary = study
    params = sorted(set(pd.read_csv(summary)["params"]))  # a cost table of the summary's models, as hkd cost writes
    cost = tmp_path / "cost.csv"
    pd.DataFrame({"model": [str(n) for n in params], "runtime": "onnxruntime", "params": params,
                  "latency_ms": [1.0 + n / 1e5 for n in params], "threads": 1}).to_csv(cost, index=False)
    reliability = tmp_path / "reliability.csv"  # as hkd tables writes it
    pd.DataFrame({"method": ["teacher", "scratch", "logits"] * 2, "width": ["teacher", "0.4M", "0.4M"] * 2,
                  "bin": [13] * 3 + [14] * 3, "pixels": [5, 9, 0, 50, 40, 7],
                  "confidence": [0.9, 0.92, None, 0.99, 0.98, 0.97],
                  "accuracy": [0.8, 0.7, None, 0.98, 0.9, 0.95]}).to_csv(reliability, index=False)
    out = make_study_figures(prep, models, tmp_path / "fig", n_slices=2, logs=logs, summary_csv=summary,
                             cost_csv=cost, reliability_csv=reliability)
    assert [p.name for p in out] == [f.file for f in CATALOG]  # every figure: the study gives every input
    for p in out:
        assert p.stat().st_size > 0 and imread(p).ndim == 3
    from hkd import record

    # no temporary files left behind: only the record of what was written, every figure in it
    assert [p.name for p in tmp_path.glob("fig/.*")] == [record.RECORD]
    rec = record.read(tmp_path / "fig")
    assert not rec["writing"] and set(rec["files"]) == {f.file for f in CATALOG}


def test_context_table_covers_sampled_slices_and_present_organs(study):
    prep, models, _, _ = study
    runs = [{"model": name, "method": name.split("_w")[0], "width": "0.4M", "seed": 0, "checkpoint": path}
            for name, path in models.items()]
    table = context_table(prep, runs, dilation=2, n_slices=3, seed=0)
    assert list(table.columns) == ["model", "method", "width", "seed", "case", "slice", "organ", "outside_mass"]
    assert set(table["model"]) == set(models)
    assert table.equals(context_table(prep, runs, dilation=2, n_slices=3, seed=0))  # seeded sample
    assert ("0004", 1, "spleen") not in set(zip(table["case"], table["slice"], table["organ"]))  # absent organ
    values = table["outside_mass"].dropna()
    assert ((values >= 0) & (values <= 1)).all()


def test_make_study_figures_explicit_slices_and_organs(study, tmp_path):
    prep, models, _, _ = study
    out = make_study_figures(prep, {"teacher": models["teacher"]}, tmp_path / "fig",
                             slice_selection=[("0004", 1)], organs=["stomach", "spleen"])
    assert [p.name for p in out] == [f.file for f in CATALOG if set(f.inputs) <= {"models", "latent_slices"}]
    with pytest.raises(ValueError, match="no figure to draw"):
        make_study_figures(prep, {}, tmp_path / "x")
    with pytest.raises(ValueError, match="not in the validation set"):
        make_study_figures(prep, models, tmp_path / "x", slice_selection=[("0009", 0)])
    with pytest.raises(ValueError, match="unknown organ"):
        make_study_figures(prep, models, tmp_path / "x", organs=["heart"])
    assert not (tmp_path / "x").exists()  # a bad slice or organ is reported before any figure is drawn
