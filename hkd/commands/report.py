"""Report commands: the Grad-CAM context table, the figures and the report's first page.

Each command is ``parser_<name>`` (its arguments) and ``cmd_<name>`` (what it does); the modules
they use are imported inside them, so a command runs only its own code (``hkd/workflow_deps.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from hkd.commands.args import json_arg, json_object
from hkd.errors import DataError

log = logging.getLogger("hkd")


def _models_arg(items: list[str]) -> dict[str, str]:
    """``NAME=RUN_FOLDER`` pairs of ``hkd figures --models``."""
    bad = [item for item in items if "=" not in item or not item.split("=", 1)[0]]
    if bad:
        raise DataError(f"--models: expected NAME=RUN_FOLDER, got {bad}")
    return dict(item.split("=", 1) for item in items)


def parser_context(sub) -> None:
    p = sub.add_parser("context", help="Grad-CAM mass outside the dilated organ, per run, slice and organ")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--runs", required=True,
                   help="JSON list of {model, method, width, seed, checkpoint} (inline or file)")
    p.add_argument("--dilation", type=int, default=3, help="pixels around the organ that count as inside")
    p.add_argument("--n-slices", type=int, default=16, help="validation slices sampled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_context, inputs=("data", "runs"), outputs=("out",))


def cmd_context(args) -> None:
    from hkd.explain.context import context_table
    from hkd.io import atomic_path

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    table = context_table(args.data, json_arg(args.runs, "--runs"), dilation=args.dilation, n_slices=args.n_slices,
                          seed=args.seed)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    log.info("%s", table.groupby(["method", "width"])["outside_mass"].mean().to_string())


def parser_figures(sub) -> None:
    p = sub.add_parser("figures", help="the study figures: every figure of hkd/figures/study/ (hkd.figures.catalog), "
                       "as NAME.png (the Grad-CAM context table is 'hkd context')")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--runs", default=None,
                   help="JSON list (inline or file) of the runs, each {name, model, method, width, seed, log} and, for "
                        "the runs shown in the qualitative figures, checkpoint; instead of --models and --logs")
    p.add_argument("--models", nargs="+", default=None,
                   help="NAME=RUN_FOLDER; names are METHOD_wWIDTH or teacher (or give --runs)")
    p.add_argument("--summary", type=Path, default=None, help="summary.csv from hkd tables")
    p.add_argument("--cost", type=Path, default=None, help="cost.csv from hkd cost (test Dice against latency)")
    p.add_argument("--reliability", type=Path, default=None,
                   help="reliability.csv from hkd tables (the reliability diagrams)")
    p.add_argument("--logs", nargs="+", default=None,
                   help="NAME=LOG_CSV of every run for the curves and gradient ratios (NAME: METHOD_wWIDTH_sSEED or "
                        "teacher); default: each --models folder's log.csv")
    p.add_argument("--slices", default='"coverage"', help='JSON: "coverage" or [[case, slice], ...]')
    p.add_argument("--n-slices", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out-dir", required=True, type=Path)
    p.set_defaults(func=cmd_figures,
                   inputs=("data", "runs", "models", "logs", "summary", "cost", "reliability", "slices"),
                   outputs=("out_dir",))


def _runs_arg(runs) -> tuple[dict, dict, dict]:
    """The checkpoints shown (by model), the logs (by run name) and every run's description, from ``--runs``."""
    keys = ("name", "model", "method", "width", "seed")
    if not isinstance(runs, list) or not all(isinstance(r, dict) and set(keys) <= set(r) for r in runs):
        raise DataError(f"--runs: expected a JSON list of objects with keys {list(keys)}")
    described = {r["name"]: r for r in runs} | {r["model"]: r for r in runs if r.get("checkpoint")}
    models = {r["model"]: Path(r["checkpoint"]) for r in runs if r.get("checkpoint")}
    return models, {r["name"]: Path(r["log"]) for r in runs if r.get("log")}, described


def cmd_figures(args) -> None:
    from hkd.figures.make import make_study_figures

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    slices = json_arg(args.slices, "--slices")
    slices = slices if slices == "coverage" else [(str(c), int(i)) for c, i in slices]
    if args.runs is not None:
        models, logs, described = _runs_arg(json_arg(args.runs, "--runs"))
    elif args.models:
        folders = _models_arg(args.models)
        models, described = {name: Path(d) / "best.pt" for name, d in folders.items()}, None
        bad = [item for item in args.logs or [] if "=" not in item or not item.split("=", 1)[0]]
        if bad:
            raise DataError(f"--logs: expected NAME=LOG_CSV, got {bad}")
        logs = (dict(item.split("=", 1) for item in args.logs) if args.logs
                else {n: Path(d) / "log.csv" for n, d in folders.items()})
    else:
        raise DataError("--runs or --models: which runs to show")
    paths = make_study_figures(args.data, models, args.out_dir, slice_selection=slices, n_slices=args.n_slices,
                               logs=logs, summary_csv=args.summary, runs=described, cost_csv=args.cost,
                               reliability_csv=args.reliability)
    log.info("wrote %s", ", ".join(str(p) for p in paths))


def parser_overview(sub) -> None:
    p = sub.add_parser("overview", help="the report's first page: what the study ran and what came out (HTML)")
    p.add_argument("--run", required=True, help="JSON object: what the configuration ran, shown as given")
    p.add_argument("--split", required=True, type=Path, help="split.json from hkd split")
    p.add_argument("--summary", required=True, type=Path, help="summary.csv from hkd tables")
    p.add_argument("--hypotheses", required=True, type=Path, help="hypotheses.csv from hkd hypotheses")
    p.add_argument("--full-table", default=None,
                   help="the verdict page with every column (hypotheses.html) as the Snakemake report names it, "
                        "linked under the first page's table")
    p.add_argument("--figure", required=True, type=Path, help="dice_vs_params.png from hkd figures")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_overview, inputs=("split", "summary", "hypotheses", "figure"), outputs=("out",))


def cmd_overview(args) -> None:
    from hkd.figures.overview import write_overview

    out = write_overview(args.out, json_object(args.run, "--run"), args.split, args.summary, args.hypotheses,
                         args.figure, args.full_table)
    log.info("wrote %s", out)
