"""The report's first page: what the study ran and what came out, as one HTML fragment.

The workflow description (``workflow/report/workflow.rst``) includes this fragment with docutils'
``raw`` directive, so the report's main page shows it without a click. What was run comes from the
split file (cases and slices per part) and the summary table (models, parameter counts, seeds); what
came out is the verdict table (``hypotheses.csv``) in the columns a reader decides by, readable without
scrolling sideways at 1280 px, with a link to the full table, and the Dice-vs-parameters figure.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import pandas as pd

from hkd.io import write_text

VERDICT_STYLE = ("<style>.hkd-overview .hkd-verdicts{width:100%;table-layout:auto}"
                 ".hkd-overview .hkd-verdicts th,.hkd-overview .hkd-verdicts td{white-space:nowrap;font-size:13px}"
                 ".hkd-overview .hkd-verdicts .hkd-claim{text-align:left;white-space:normal;min-width:12em}"
                 ".hkd-overview .hkd-verdicts .hkd-flags{text-align:left;white-space:normal}"
                 ".hkd-overview .hkd-flag{display:inline-block;margin:1px 2px;padding:0 4px;border-radius:3px;"
                 "background:#fdf1d6;font-size:12px;cursor:help}"
                 ".hkd-overview .supported{color:#17692b;font-weight:bold}"
                 ".hkd-overview .not-supported{color:#8a1c1c}.hkd-overview .inconclusive{color:#7a5a00}</style>")
STYLE = ("<style>.hkd-overview table{border-collapse:collapse;margin:4px 0 12px}"
         ".hkd-overview th,.hkd-overview td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
         ".hkd-overview th{background:#f3f3f3}.hkd-overview img{max-width:100%}"
         "</style>" + VERDICT_STYLE)


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _width(row: pd.Series) -> str:
    """A summary row's width: the preset name and multiplier, the multiplier alone, or nothing (teacher)."""
    preset, multiplier = row.get("preset"), row.get("multiplier")
    multiplier = "" if pd.isna(multiplier) else f"x{float(multiplier):g}"
    if isinstance(preset, str) and preset:
        return f"{preset} ({multiplier})" if multiplier else preset
    return multiplier


def student(row: dict) -> str:
    """A verdict row's student: the preset or ``students.models`` label, else ``x<multiplier>``."""
    preset, multiplier = row.get("preset"), row.get("multiplier")
    if isinstance(preset, str) and preset:
        return preset
    return "" if pd.isna(multiplier) else f"x{float(multiplier):g}"


def difference(row: dict) -> str:
    """``+0.012 [-0.004, +0.031]``: the mean difference and its 95% CI, three decimals."""
    values = [row["mean_diff"], row["ci_low"], row["ci_high"]]
    low, high = ("n/a" if pd.isna(v) else f"{v:+.3f}" for v in values[1:])
    return ("n/a" if pd.isna(values[0]) else f"{values[0]:+.3f}") + f" [{low}, {high}]"


def _some(count) -> bool:
    """Whether a ``k/n`` count (or ``a/b vs c/d``) counts any run."""
    return isinstance(count, str) and any(int(part.split("/")[0]) > 0 for part in count.split(" vs ") if "/" in part)


def flags(row: dict) -> list[tuple[str, str]]:
    """Short flags of a verdict row (text, what it means), from its run counts and note."""
    from hkd.evaluate.hypotheses import MIN_SEEDS

    out = []
    if _some(row.get("diverged_runs")):
        out.append((f"diverged {row['diverged_runs']}", "the method's runs that diverged"))
    if _some(row.get("unconverged_runs")):
        out.append((f"unconverged {row['unconverged_runs']}", "runs that did not converge: the method's vs scratch's"))
    if _some(row.get("gradient_flagged_runs")):
        out.append((f"gradient-flagged {row['gradient_flagged_runs']}",
                    "the method's runs where a distillation term stayed above 10x the segmentation gradient in a "
                    "block after the warm-up"))
    seeds = [int(s) for s in str(row.get("seeds", "")).split(" vs ") if s.strip().isdigit()]
    if seeds and min(seeds) < MIN_SEEDS:
        out.append((f"seeds {row['seeds']}", f"fewer than {MIN_SEEDS} seeds per arm"))
    if isinstance(row.get("mde"), float) and math.isinf(row["mde"]):
        out.append(("n too small", f"{row['n']} cases cannot reach the corrected alpha"))
    return out


#: The first page's title of each family of the verdict table (hkd.evaluate.hypotheses).
FAMILY_TITLES = {"hypotheses": "The hypotheses (one family, Holm-adjusted together)",
                 "beyond Dice": "Beyond Dice: calibration around the organs (scratch's ECE minus the method's) and "
                                "the scanner shift ((method - scratch) on the external cohort minus on the study's "
                                "test cases); positive favours the method. A second family, Holm-adjusted apart "
                                "from the hypotheses"}


def _open_result(path: str) -> str:
    """A link target that shows the report's result ``path`` at once, as its view button does (Snakemake 9's
    report app: ``results``, ``app.setView``), or else its entry, as an rst reference to it does."""
    p = json.dumps(path)
    return (f"javascript:void((typeof results==='object'&&results[{p}]&&results[{p}].data_uri)?"
            f"app.setView({{navbarMode:'resultinfo',resultPath:{p},content:'html',contentPath:results[{p}].data_uri}})"
            f":app.showResultInfo({p}))")


def verdict_summary(table: pd.DataFrame, full_table: str | None = None) -> str:
    """The first page's verdict table: claim, student, difference with its 95% CI, Holm-adjusted p, verdict
    and short flags (each flag's tooltip: its meaning; the row's tooltip: the full note), one table per
    family of claims (each its own Holm adjustment) under its title; ``full_table``, the report's path of the
    page with every column, is linked under them."""
    from hkd.evaluate.tables import format_p

    head = "".join(f"<th{kind}>{h}</th>" for h, kind in (("claim", " class='hkd-claim'"), ("student", ""),
                                                          ("difference [95% CI]", ""), ("p (Holm)", ""),
                                                          ("verdict", ""), ("flags", " class='hkd-flags'")))
    groups = list(table.groupby("family", sort=False)) if "family" in table and table["family"].notna().any() \
        else [(None, table)]
    tables = []
    for family, rows_of in groups:
        rows = []
        for row in rows_of.to_dict("records"):
            note = "" if pd.isna(row.get("note")) else str(row["note"])
            flag_html = " ".join(f"<span class='hkd-flag' title='{html.escape(why, quote=True)}'>"
                                 f"{html.escape(text)}</span>" for text, why in flags(row)) or "-"
            verdict = str(row["verdict"])
            rows.append(f"<tr title='{html.escape(note, quote=True)}'><td class='hkd-claim'>"
                        f"{html.escape(str(row['claim']))}</td><td>{html.escape(student(row))}</td>"
                        f"<td>{difference(row)}</td><td>{format_p(row['p_holm'])}</td>"
                        f"<td class='{verdict.replace(' ', '-')}'>{html.escape(verdict)}</td>"
                        f"<td class='hkd-flags'>{flag_html}</td></tr>")
        title = "" if family is None or len(groups) == 1 else \
            f"<h4>{html.escape(FAMILY_TITLES.get(family, str(family)))}</h4>"
        tables.append(f"{title}<table class='hkd-verdicts'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
                      "</tbody></table>")
    link = ""
    if full_table:
        link = (f"<p>Every column (n, seeds, the three means, raw p, mde, the full note) and how each is "
                f"computed: <a class='hkd-full-table' href=\"{html.escape(_open_result(str(full_table)), quote=True)}\">"
                f"{html.escape(Path(full_table).name)}</a> (Verdicts).</p>")
    return "".join(tables) + link


def overview_html(run: dict, split: dict, summary: pd.DataFrame, verdicts: pd.DataFrame, figure_png: bytes,
                  full_table: str | None = None) -> str:
    """The fragment: ``run`` holds what the configuration says (data source, methods, widths, seeds...);
    ``verdicts`` is ``hypotheses.csv``, ``full_table`` the report's path of ``hypotheses.html``."""
    parts = ["<div class='hkd-overview'>", STYLE, "<h3>What was run</h3>",
             _table([[k, v] for k, v in run.items()], ["", ""])]
    parts.append(_table([[part, split["cases"][part], split["slices"][part]] for part in ("train", "val", "test")],
                        ["part", "cases", "slices"]))
    parts.append(_table([[r["method"], _width(r), f"{int(r['params']):,}", int(r["seeds"])]
                         for _, r in summary.iterrows()], ["model", "width", "parameters", "seeds"]))
    parts += ["<h3>What came out</h3>", verdict_summary(verdicts, full_table),
              f"<img alt='Dice against parameters' src='data:image/png;base64,"
              f"{base64.b64encode(figure_png).decode()}'>", "</div>"]
    return "\n".join(parts) + "\n"


def write_overview(out_html: str | Path, run: dict, split_json: str | Path, summary_csv: str | Path,
                   hypotheses_csv: str | Path, figure_png: str | Path, full_table: str | None = None) -> Path:
    """Write the first-page fragment atomically; returns its path."""
    text = overview_html(run, json.loads(Path(split_json).read_text()),
                         pd.read_csv(summary_csv, dtype={"preset": str}),
                         pd.read_csv(hypotheses_csv, dtype={"preset": str, "seeds": str}),
                         Path(figure_png).read_bytes(), full_table)
    write_text(out_html, text)
    return Path(out_html)
