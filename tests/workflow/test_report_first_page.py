"""The report's first page read as a reader does, in Chromium at 1280 px: the verdict rows with the numbers of
hypotheses.csv, nothing behind a horizontal scroll bar, and the full table one click away."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from helpers import CHROMIUM, chromium_page

from hkd.evaluate.tables import format_p
from hkd.figures.overview import student

pytestmark = pytest.mark.slow

NUMBER = re.compile(r"[+-]?\d+\.\d+")


@pytest.fixture(scope="module")
def report(default_study, default_report):
    """The shared study's report (conftest ``default_report``) and its verdict table."""
    verdicts = pd.read_csv(default_study.out / "hypotheses.csv", dtype={"preset": str, "seeds": str})
    return default_report, verdicts


def _fits(table) -> None:
    """The table ends inside the 1280 px window and no element on the way to it scrolls sideways."""
    box = table.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 1280, box
    hidden = table.evaluate("""t => { const out = [];
        for (let e = t; e; e = e.parentElement)
            if (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible'
                || e === document.scrollingElement && e.scrollWidth > e.clientWidth)
                out.push(e.tagName + '.' + e.className + ' ' + e.scrollWidth + '>' + e.clientWidth);
        return out; }""")
    assert not hidden, hidden
    for cell in table.locator("td, th").all():
        cbox = cell.bounding_box()
        assert cbox["x"] + cbox["width"] <= box["x"] + box["width"] + 1, cell.inner_text()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package 'chromium')")
def test_first_page_shows_every_verdict_with_its_numbers_without_scrolling_at_1280px(report):
    html, verdicts = report
    errors = []
    with chromium_page(1280, errors) as page:
        page.goto(html.as_uri())
        tables = page.locator(".hkd-overview table.hkd-verdicts")  # one per family of claims
        tables.first.wait_for(timeout=10_000)
        assert tables.count() == verdicts["family"].nunique() == 2
        for t in range(tables.count()):
            assert tables.nth(t).locator("th").all_inner_texts() == ["claim", "student", "difference [95% CI]",
                                                                     "p (Holm)", "verdict", "flags"]
        rows = tables.locator("tbody tr")
        assert rows.count() == len(verdicts)
        for i, expected in enumerate(verdicts.to_dict("records")):
            claim, who, diff, p_holm, verdict, _ = rows.nth(i).locator("td").all_inner_texts()
            assert (claim, who, p_holm, verdict) == (expected["claim"], student(expected),
                                                     format_p(expected["p_holm"]), expected["verdict"])
            shown = [float(x) for x in NUMBER.findall(diff)]
            assert shown == pytest.approx([expected[k] for k in ("mean_diff", "ci_low", "ci_high")], abs=5e-4), diff
            assert rows.nth(i).get_attribute("title") == ("" if pd.isna(expected["note"]) else expected["note"])
        # the same claim at two students reads as two rows
        assert len({tuple(rows.nth(i).locator("td").all_inner_texts()[:2]) for i in range(rows.count())}) == \
            len(verdicts)

        # nothing sideways: each table ends inside the window and no element on the way to it scrolls
        for t in range(tables.count()):
            _fits(tables.nth(t))

        # the full table, one click away
        page.locator("a.hkd-full-table").click()
        frame = page.frame_locator("iframe").first
        frame.locator("table").wait_for(timeout=10_000)
        assert {"claim", "p_value", "p_holm", "mde", "note"} <= set(frame.locator("th").all_inner_texts())
    assert not errors, errors


def test_first_page_fragment_lists_every_verdict_with_its_student_and_numbers(default_study, tmp_path):
    """The fragment the workflow writes (hkd overview), read as HTML where no browser runs: one verdict row
    per line of hypotheses.csv, in its order, with the student, the Holm p and the verdict of that line."""
    from hkd.cli import main

    out, figures = default_study.out, default_study.out / "figures"
    page = tmp_path / "overview.html"
    assert main(["overview", "--run", '{"methods": "scratch, logits"}', "--split", str(out / "data" / "split.json"),
                 "--summary", str(out / "tables" / "summary.csv"), "--hypotheses", str(out / "hypotheses.csv"),
                 "--figure", str(figures / "dice_vs_params.png"), "--out", str(page)]) == 0
    verdicts = pd.read_csv(out / "hypotheses.csv", dtype={"preset": str, "seeds": str})
    tables = [t.split("</table>", 1)[0] for t in page.read_text().split("<table class='hkd-verdicts'>")[1:]]
    assert len(tables) == verdicts["family"].nunique() == 2  # the hypotheses, and the claims beyond Dice
    rows = [r for t in tables for r in re.findall(r"<tr[^>]*>(.*?)</tr>", t.split("<tbody>", 1)[1], re.S)]
    assert len(rows) == len(verdicts)
    for row, (_, want) in zip(rows, verdicts.iterrows()):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        assert cells[0] == want["claim"] and cells[1] == student(want.to_dict()) and want["verdict"] in cells[4]
        assert cells[3] == format_p(want["p_holm"]), (cells, want["p_holm"])
