"""Evaluation commands: one run on the test cases, the study tables and the hypothesis verdicts.

Each command is ``parser_<name>`` (its arguments) and ``cmd_<name>`` (what it does); the modules
they use are imported inside them, so a command runs only its own code (``hkd/workflow_deps.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("hkd")


def _read_evals(paths):
    """The evaluation CSVs as one table (a CSV without rows is refused, naming it)."""
    from hkd.evaluate.tables import read_evals

    return read_evals(paths)


def parser_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="volume-level Dice, IoU and HD95 of one trained run on the test cases")
    p.add_argument("--run", required=True, type=Path, help="run folder (best.pt, last.pt, metrics.json)")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--model-name", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--width", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--part", default="test", choices=["val", "test"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--fit-on", type=Path, default=None,
                   help="prepared dataset whose validation cases fit the temperature (default: --data)")
    p.add_argument("--out", required=True, type=Path, help="tidy CSV")
    p.set_defaults(func=cmd_evaluate, inputs=("run", "data", "fit_on"), outputs=("out",))


def cmd_evaluate(args) -> None:
    from hkd.evaluate.volume import evaluate_run
    from hkd.io import atomic_path

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    table = evaluate_run(args.run, args.data, model_name=args.model_name, method=args.method, width=args.width,
                         seed=args.seed, part=args.part, device=args.device, fit_on=args.fit_on)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    dice = table[table["metric"] == "dice"]["value"].mean()
    log.info("%s: %d cases, mean Dice %.4f", args.model_name, table["case"].nunique(), dice)


def parser_tables(sub) -> None:
    p = sub.add_parser("tables", help="study tables (mean and std over seeds) from evaluation CSVs")
    p.add_argument("--evals", required=True, nargs="+", type=Path)
    p.add_argument("--external-evals", nargs="+", type=Path, default=None,
                   help="the same runs' evaluations on the external cohort: the summary's external Dice and drop")
    p.add_argument("--out-dir", required=True, type=Path)
    p.set_defaults(func=cmd_tables, inputs=("evals", "external_evals"), outputs=("out_dir",))


def cmd_tables(args) -> None:
    from hkd.evaluate.tables import organ_table, reliability_table, summary_table, to_html, to_markdown
    from hkd.io import atomic_path, write_text

    evals = _read_evals(args.evals)
    out = args.out_dir
    titles = {"summary": "Test metrics per model (mean and std over seeds)",
              "organs": "Test Dice, VOE, RVD and HD95 per model and class (mean and std over seeds)"}
    external = _read_evals(args.external_evals) if args.external_evals else None
    for name, table in (("summary", summary_table(evals, external)), ("organs", organ_table(evals))):
        with atomic_path(out / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False)
        write_text(out / f"{name}.md", to_markdown(table))
        write_text(out / f"{name}.html", to_html(table, titles[name]))
    with atomic_path(out / "reliability.csv") as tmp:  # the reliability diagrams' points
        reliability_table(evals).to_csv(tmp, index=False)
        if name == "summary":
            print(to_markdown(table))


def parser_hypotheses(sub) -> None:
    p = sub.add_parser("hypotheses", help="paired tests and verdicts of every method against scratch")
    p.add_argument("--evals", required=True, nargs="+", type=Path)
    p.add_argument("--context", type=Path, default=None, help="Grad-CAM context CSV from hkd context")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--compare-students", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="also claim, per method, that student A gains more from it than student B, each over its "
                        "own scratch run (report.compare_students; repeatable)")
    p.add_argument("--external-evals", nargs="+", type=Path, default=None,
                   help="the same runs' evaluations on the external cohort (data.external): the shift claims")
    p.add_argument("--out-csv", required=True, type=Path)
    p.add_argument("--out-md", required=True, type=Path)
    p.add_argument("--out-html", required=True, type=Path)
    p.set_defaults(func=cmd_hypotheses, inputs=("evals", "context", "external_evals"),
                   outputs=("out_csv", "out_md", "out_html"))


def cmd_hypotheses(args) -> None:
    import pandas as pd

    from hkd.evaluate.hypotheses import explanation, report_markdown, study_claims
    from hkd.evaluate.tables import to_html
    from hkd.io import atomic_path, write_text

    context = pd.read_csv(args.context, dtype={"case": str, "width": str}) if args.context else None
    external = _read_evals(args.external_evals) if args.external_evals else None
    table = study_claims(_read_evals(args.evals), context, seed=args.seed, compare_students=args.compare_students,
                         external=external)
    with atomic_path(args.out_csv) as tmp:
        table.to_csv(tmp, index=False)
    text = report_markdown(table, seed=args.seed)
    write_text(args.out_md, text)
    write_text(args.out_html, to_html(table, "Hypothesis verdicts", notes=explanation(seed=args.seed, markdown=False)))
    print(text)
