"""The report's first page: what the study ran and what came out, as one HTML fragment.

The workflow description (``workflow/report/workflow.rst``) includes this fragment with docutils'
``raw`` directive, so the report's main page shows it without a click. What was run comes from the
split file (cases and slices per part) and the summary table (models, parameter counts, seeds); what
came out is the verdict table as the hypotheses step wrote it, and the Dice-vs-parameters figure.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import pandas as pd

from hkd.io import write_text

STYLE = ("<style>.hkd-overview table{border-collapse:collapse;margin:4px 0 12px}"
         ".hkd-overview th,.hkd-overview td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
         ".hkd-overview th{background:#f3f3f3}.hkd-overview img{max-width:100%}"
         ".hkd-overview .hkd-verdicts{overflow-x:auto;max-width:100%}"
         ".hkd-overview .hkd-verdicts th,.hkd-overview .hkd-verdicts td{white-space:nowrap;font-size:12px}</style>")


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


def verdict_table(hypotheses_html: str) -> str:
    """The ``<table>`` element of the hypotheses page (its formatting is the hypotheses step's)."""
    m = re.search(r"<table\b.*?</table>", hypotheses_html, re.S)
    if not m:
        raise ValueError("the hypotheses page holds no table")
    return m.group(0)


def overview_html(run: dict, split: dict, summary: pd.DataFrame, hypotheses_html: str, figure_png: bytes) -> str:
    """The fragment: ``run`` holds what the configuration says (data source, methods, widths, seeds...)."""
    parts = ["<div class='hkd-overview'>", STYLE, "<h3>What was run</h3>",
             _table([[k, v] for k, v in run.items()], ["", ""])]
    parts.append(_table([[part, split["cases"][part], split["slices"][part]] for part in ("train", "val", "test")],
                        ["part", "cases", "slices"]))
    parts.append(_table([[r["method"], _width(r), f"{int(r['params']):,}", int(r["seeds"])]
                         for _, r in summary.iterrows()], ["model", "width", "parameters", "seeds"]))
    parts += ["<h3>What came out</h3>", "<div class='hkd-verdicts'>", verdict_table(hypotheses_html), "</div>",
              f"<img alt='Dice against parameters' src='data:image/png;base64,"
              f"{base64.b64encode(figure_png).decode()}'>", "</div>"]
    return "\n".join(parts) + "\n"


def write_overview(out_html: str | Path, run: dict, split_json: str | Path, summary_csv: str | Path,
                   hypotheses_html: str | Path, figure_png: str | Path) -> Path:
    """Write the first-page fragment atomically; returns its path."""
    text = overview_html(run, json.loads(Path(split_json).read_text()),
                         pd.read_csv(summary_csv, dtype={"preset": str}),
                         Path(hypotheses_html).read_text(), Path(figure_png).read_bytes())
    write_text(out_html, text)
    return Path(out_html)
