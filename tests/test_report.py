"""The default study end to end (reduced, see helpers.STUDY), and its report as a web page in headless Chromium."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from helpers import snakemake

pytestmark = pytest.mark.slow

FIGURES = ["overlays", "saliency", "gradcam", "latent_pca", "training_curves", "dice_vs_params"]
TABLES = ["summary.html", "organs.html"]
DAG_RULES = ["phantom", "split", "prepare", "train_teacher", "teacher_cache", "train_student", "evaluate_teacher",
             "evaluate_student", "context", "tables", "figures", "hypotheses"]
CHROMIUM = os.environ.get("HKD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def study(default_study):
    """The shared study (conftest ``default_study``), and its report (`snakemake --report`)."""
    out = default_study.out
    print((out / "hypotheses.md").read_text())
    html = default_study.root / "report.html"
    rep = snakemake(default_study.root, "--report", str(html))
    assert rep.returncode == 0, rep.stderr[-3000:]
    return out, html


def test_default_study_produces_tables_figures_and_verdicts(study):
    out, _ = study
    summary = pd.read_csv(out / "tables" / "summary.csv", dtype={"width": str})
    assert "teacher" in set(summary["method"])
    assert {"scratch", "logits", "latent", "hlfd"} <= set(summary["method"])
    verdicts = pd.read_csv(out / "hypotheses.csv", dtype={"width": str})
    assert set(verdicts["verdict"]) <= {"supported", "not supported", "inconclusive"}
    assert {"logits", "latent", "hlfd"} <= set(verdicts["method"])
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").stat().st_size > 0


def test_report_names_every_figure_and_the_verdicts(study):
    _, html = study
    text = html.read_text(errors="ignore")
    for name in [f"{f}.png" for f in FIGURES] + TABLES + ["hypotheses.html"]:
        assert name in text, name


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package 'chromium')")
def test_report_renders_every_figure_and_the_verdicts_table_in_chromium(study):
    sync_api = pytest.importorskip("playwright.sync_api")
    _, html = study
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))

        def open_item(category: str, name: str):
            page.goto(html.as_uri())
            page.get_by_text(category, exact=True).click()
            page.locator("tr", has_text=name).locator('a[iconname="eye"]').click()

        for fig in FIGURES:
            open_item("Figures", f"{fig}.png")
            img = page.locator('img[src^="data:image/png"]')
            img.wait_for(timeout=10_000)
            width = img.evaluate("e => e.complete ? e.naturalWidth : 0")
            assert width > 100, f"{fig}.png did not render"
        for category, name in [("Tables", t) for t in TABLES] + [("Verdicts", "hypotheses.html")]:
            open_item(category, name)
            frame = page.frame_locator("iframe").first
            frame.locator("table").wait_for(timeout=10_000)
            assert frame.locator("tr").count() > 1, f"{name} shows no rows"
        headers = frame.locator("th").all_inner_texts()
        assert {"claim", "verdict", "p_value", "ci_low", "ci_high"} <= set(headers)

        page.goto(html.as_uri())  # the workflow's rule graph, drawn by the report
        page.get_by_text("Workflow", exact=True).click()
        graph = page.locator("#rulegraph canvas, #rulegraph svg").first
        graph.wait_for(timeout=10_000)
        box = graph.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100, box
        drawn = page.evaluate("rulegraph_spec.data.flatMap(d => (d.values || []).map(v => v.rule)).filter(Boolean)")
        assert set(DAG_RULES) <= set(drawn), drawn
        browser.close()
    assert not errors, errors
