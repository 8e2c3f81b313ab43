"""The shared study (the default reduced by helpers.STUDY), its report built as after a plain install, and that
report as a web page in headless Chromium."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml
from helpers import CHROMIUM, REPO, chromium_page, snakemake_as_plain_install

from hkd.figures.catalog import read_catalog

pytestmark = pytest.mark.slow

FIGURES = [figure.name for figure in read_catalog()]  # every study figure of the catalog
TABLES = ["summary.html", "organs.html", "data.html"]
DAG_RULES = ["phantom", "split", "prepare", "describe_data", "train_teacher", "teacher_cache", "train_scratch",
             "train_student", "evaluate_teacher", "evaluate_scratch", "evaluate_student", "context", "tables",
             "figures", "hypotheses", "cost", "export_student",
             # the external cohort (data.external): generated, split, prepared, every model evaluated on it
             "phantom_external", "split_external", "prepare_external", "evaluate_teacher_external",
             "evaluate_scratch_external", "evaluate_student_external"]


@pytest.fixture(scope="module")
def study(default_study, default_report):
    """The shared study (conftest ``default_study``) and its report, built under the plain-install rules."""
    print((default_study.out / "hypotheses.md").read_text())
    return default_study.out, default_report, default_study.root


def test_study_produces_tables_figures_and_verdicts(study):
    out, _, _ = study
    summary = pd.read_csv(out / "tables" / "summary.csv", dtype={"width": str})
    assert {"teacher", "scratch", "logits", "latent", "hlfd"} <= set(summary["method"])
    verdicts = pd.read_csv(out / "hypotheses.csv", dtype={"width": str})
    assert set(verdicts["verdict"]) <= {"supported", "not supported", "inconclusive"}
    assert {"logits", "latent", "hlfd"} <= set(verdicts["method"])
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").stat().st_size > 0


def test_report_needs_only_the_plain_install(study, tmp_path):
    """The report built above under the plain-install import rules; without pygments among the
    dependencies the same command fails, so the import rules do bite."""
    _, html, root = study
    assert html.stat().st_size > 0
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("\n".join(line for line in (REPO / "pyproject.toml").read_text().splitlines()
                                   if not line.strip().startswith('"pygments')))
    rep = snakemake_as_plain_install(root, "--report", str(tmp_path / "r.html"), pyproject=pyproject)
    assert rep.returncode != 0 and "pygments must be installed" in rep.stdout + rep.stderr


def test_report_names_every_figure_and_the_verdicts(study):
    _, html, _ = study
    text = html.read_text(errors="ignore")
    for name in [f"{f}.png" for f in FIGURES] + TABLES + ["hypotheses.html", "overview.html"]:
        assert name in text, name


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package 'chromium')")
def test_report_rule_graph_draws_every_rule(study):
    """The rule graph embedded in the report names every rule of the DAG (one node per rule is checked on
    the study configs by test_workflow; this study's cached students sit one level lower)."""
    _, html, _ = study
    spec = re.search(r"var rulegraph_spec = (\{.*?\});\s*$", html.read_text(), re.M | re.S)
    assert spec, "no rule graph in the report"
    nodes = next(d["values"] for d in json.loads(spec.group(1))["data"] if d["name"] == "node-data")
    assert {n["rule"] for n in nodes} - {"all"} == set(DAG_RULES), nodes


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package 'chromium')")
@pytest.mark.budget(60)  # a browser opening every figure and table
def test_report_renders_first_page_figures_and_tables_in_chromium(study):
    out, html, _ = study
    errors = []
    with chromium_page(1400, errors) as page:

        # first page: what was run and what came out, without a click
        page.goto(html.as_uri())
        first = page.locator(".hkd-overview")
        first.wait_for(timeout=10_000)
        text = first.inner_text()
        summary = pd.read_csv(out / "tables" / "summary.csv")
        student_params = f"{int(summary.loc[summary['method'] == 'scratch', 'params'].iloc[0]):,}"
        cases = yaml.safe_load((out / "data" / "split.json").read_text())["cases"]
        for words in ("What was run", f"phantom: {sum(cases.values())} generated", "scratch, logits, latent, hlfd",
                      student_params, "What came out", "H1: logits", "verdict"):
            assert words in text, words
        split = yaml.safe_load((out / "data" / "split.json").read_text())
        for part in ("train", "val", "test"):
            row = first.locator("tr", has=page.locator(f"td:text-is('{part}')")).first.inner_text().split()
            assert row[1:] == [str(split["cases"][part]), str(split["slices"][part])], row
        figure = first.locator('img[src^="data:image/png"]')
        assert figure.evaluate("e => e.complete ? e.naturalWidth : 0") > 100

        def open_item(category: str, name: str):
            page.goto(html.as_uri())
            page.locator("nav, ul").get_by_text(category, exact=True).first.click()
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
        page.locator("nav, ul").get_by_text("Workflow", exact=True).first.click()
        graph = page.locator("#rulegraph canvas, #rulegraph svg").first
        graph.wait_for(timeout=10_000)
        box = graph.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100, box
        drawn = page.evaluate("rulegraph_spec.data.flatMap(d => (d.values || []).map(v => v.rule)).filter(Boolean)")
        assert set(drawn) - {"all"} == set(DAG_RULES), drawn
    assert not errors, errors
