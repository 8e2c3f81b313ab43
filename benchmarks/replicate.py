"""Replication: the study again with a disjoint seed set, on the same data and teacher; both verdict tables.

Runs the study (the default, or ``--configfile``'s) as ``snakemake`` would, reusing it when it has finished,
then a second study B whose students train with other seeds (by default the next ones: 3, 4, 5 after
0, 1, 2) and whose output folder (``<out>-replicate``) starts with hard links to the first study's source
data, prepared data, teacher (with its feature caches) and teacher evaluation, times preserved. B's
dry run must plan no data or teacher job, else the script stops before training anything. B runs up to
its verdict table, and the two tables are printed side by side: for each claim, mean difference, 95% CI,
p-value, Holm-adjusted p, verdict and the verdict's margin of each seed set (in half-widths of its CI, marked
"fragile" below ``hkd.evaluate.stats.FRAGILE_MARGIN``: see ``hypotheses.md``), then how many verdicts agree
and how many of those that differ were fragile. Each part's wall time is printed.

    python benchmarks/replicate.py --cores all
    python benchmarks/replicate.py --configfile workflow/configs/synapse-paper.yaml --seeds 10 11 12
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from hkd.config_checks import merge_config
from hkd.evaluate.stats import FRAGILE_MARGIN, verdict_margin

ROOT = Path(__file__).resolve().parents[1]
# What B takes over from the first study: everything upstream of the students (paths under `out`).
UPSTREAM = ("raw", "data", "models/teacher", "eval/teacher.csv", "eval/external/teacher.csv")
# Rules whose outputs those are: B's dry run may plan none of them.
UPSTREAM_RULES = {"phantom", "download", "extract", "split", "prepare", "train_teacher", "teacher_cache",
                  "evaluate_teacher", "phantom_external", "split_external", "prepare_external",
                  "evaluate_teacher_external"}


def study_config(root: Path, configfile: Path | None = None) -> dict:
    """The study's configuration: ``config.yaml`` under ``root``, updated by ``configfile``."""
    config = yaml.safe_load((root / "config.yaml").read_text())
    return merge_config(config, yaml.safe_load(configfile.read_text())) if configfile else config


def disjoint_seeds(seeds: list[int], given: list[int] | None = None) -> list[int]:
    """``given``, or as many seeds as ``seeds`` right after its largest; an error if they overlap ``seeds``."""
    chosen = list(given) if given else [max(seeds) + 1 + i for i in range(len(seeds))]
    shared = sorted(set(chosen) & set(seeds))
    if shared:
        raise SystemExit(f"--seeds {chosen}: seeds {shared} are already the first study's (students.seeds)")
    return chosen


def _link_tree(src: Path, dest: Path) -> None:
    """``dest`` as a copy of ``src`` made of hard links (plain copies across file systems), times preserved."""
    if src.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dest)
        except OSError:
            shutil.copy2(src, dest)
        return
    dest.mkdir(parents=True, exist_ok=True)
    for child in src.iterdir():
        _link_tree(child, dest / child.name)
    shutil.copystat(src, dest)


def reuse_upstream(first: Path, second: Path) -> list[str]:
    """Link the first study's :data:`UPSTREAM` outputs into ``second`` where it lacks them; returns those linked
    (none when B already holds them: a second replication reuses B).

    Hard links keep the files' times (so nothing upstream looks newer than B's students) and cost no
    space; ``hkd`` replaces files rather than writing into them, so a later rerun of the first study
    leaves B's copies as they were.
    """
    linked = []
    for name in UPSTREAM:
        src, dest = first / name, second / name
        if dest.exists() or not src.exists():
            continue
        _link_tree(src, dest)
        linked.append(name)
    return linked


def snakemake(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m snakemake`` on the workflow in ``root``; its output is captured."""
    return subprocess.run([sys.executable, "-m", "snakemake", "--directory", str(root), "--snakefile",
                           str(root / "Snakefile"), *args], cwd=root, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count of the ``Job stats`` table a ``snakemake -n`` prints (empty: nothing to do)."""
    block = dry_run_output.split("Job stats:", 1)
    if len(block) < 2:
        return {}
    jobs = {}
    for line in block[1].splitlines():
        row = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if row and row.group(1) != "total":
            jobs[row.group(1)] = int(row.group(2))
        elif row or (jobs and not line.strip()):
            break
    return jobs


def _fmt(value: float, p: bool = False) -> str:
    if pd.isna(value):
        return "n/a"
    if p and value < 0.001:
        return "<0.001"
    return f"{value:.3f}"


def margins(table: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each verdict's ``margin`` and ``fragile`` as ``hkd hypotheses`` wrote them, or, for a table written
    before it did, computed the same way from the verdict and CI (its note says where n was too small)."""
    if "margin" in table and "fragile" in table:
        return table["margin"].astype(float), table["fragile"].astype(str).str.lower().eq("true")
    notes = table["note"].fillna("").astype(str) if "note" in table else pd.Series("", index=table.index)
    margin = pd.Series([verdict_margin(v, lo, hi, can_support="n too small" not in note) for v, lo, hi, note in
                        zip(table["verdict"], table["ci_low"], table["ci_high"], notes)], index=table.index, dtype=float)
    return margin, margin.lt(FRAGILE_MARGIN)


def _margin_text(margin: float, fragile: bool) -> str:
    return "n/a" if pd.isna(margin) else f"{margin:.2f}" + (" fragile" if fragile else "")


def side_by_side(first: Path, second: Path, labels: tuple[str, str] = ("A", "B")) -> str:
    """The two verdict tables (``hypotheses.csv``) as one Markdown table, a row per claim and width, with each
    verdict's margin (``fragile`` below :data:`~hkd.evaluate.stats.FRAGILE_MARGIN`), then how many verdicts
    agree and how many of the claims whose verdicts differ had a fragile verdict in either table."""
    tables = []
    for path, label in zip((first, second), labels):
        t = pd.read_csv(path, dtype={"preset": str})
        t["width"] = [p if isinstance(p, str) and p else f"x{m:g}" for p, m in zip(t["preset"], t["multiplier"])]
        margin, fragile = margins(t)
        shown = pd.DataFrame({
            "claim": t["claim"], "width": t["width"],
            f"diff {label}": t["mean_diff"].map(_fmt),
            f"95% CI {label}": [f"[{_fmt(lo)}, {_fmt(hi)}]" for lo, hi in zip(t["ci_low"], t["ci_high"])],
            f"p {label}": t["p_value"].map(lambda v: _fmt(v, p=True)),
            f"p_holm {label}": t["p_holm"].map(lambda v: _fmt(v, p=True)),
            f"verdict {label}": t["verdict"],
            f"margin {label}": [_margin_text(m, f) for m, f in zip(margin, fragile)]})
        tables.append(shown)
    both = tables[0].merge(tables[1], on=["claim", "width"], how="outer", sort=False).fillna("(none)")
    differ = both[f"verdict {labels[0]}"] != both[f"verdict {labels[1]}"]
    fragile = both[f"margin {labels[0]}"].str.endswith("fragile") | both[f"margin {labels[1]}"].str.endswith("fragile")
    return (both.to_markdown(index=False, disable_numparse=True)
            + f"\n\nverdicts agree on {int((~differ).sum())} of {len(both)} claims; "
            f"{int((differ & fragile).sum())} of the {int(differ.sum())} that differ had a fragile verdict "
            f"(margin below {FRAGILE_MARGIN} CI half-widths) in either table\n")


@dataclass
class Replication:
    """The two studies: folders, seeds, and the snakemake arguments that run B up to its verdicts."""

    first: Path
    second: Path
    seeds: tuple[list[int], list[int]]
    linked: list[str]  # what B took over from A this time (nothing when B already held it)
    args: list[str]  # B's snakemake arguments: its config files, then its target


def prepare(root: Path, configfile: Path | None = None, seeds: list[int] | None = None,
            out: Path | None = None) -> Replication:
    """Study B's folder (``out``, by default ``<out>-replicate``) holding A's upstream outputs
    (:func:`reuse_upstream`) and ``replicate.yaml``, B's changes to A's configuration: its folder and seeds."""
    config = study_config(root, configfile)
    first = root / config["out"]  # relative folders are the workflow's, under root
    chosen = disjoint_seeds(config["students"]["seeds"], seeds)
    second = out.resolve() if out else first.with_name(first.name + "-replicate")
    configs = ["--configfile", str(configfile.resolve())] if configfile else []
    linked = reuse_upstream(first, second)
    override = second / "replicate.yaml"  # kept in B's folder: what B changed, for the record
    override.write_text(yaml.safe_dump({"out": str(second), "students": {"seeds": chosen}}))
    args = ["--configfile", *configs[1:], str(override), "--", str(second / "hypotheses.csv")]
    return Replication(first, second, (list(config["students"]["seeds"]), chosen), linked, args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", type=Path, help="the study's config file (as for snakemake)")
    parser.add_argument("--cores", default="all", help="snakemake --cores (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", help="B's seeds (default: the next ones)")
    parser.add_argument("--out", type=Path, help="B's output folder (default: <out>-replicate)")
    args = parser.parse_args(argv)
    times = {}

    def run(label: str, *extra: str) -> str:
        started = time.time()
        result = snakemake(ROOT, "--cores", args.cores, *extra)
        times[label] = time.time() - started
        print(f"{label}: {times[label]:.0f} s", flush=True)
        if result.returncode:
            raise SystemExit(f"{label} failed (snakemake exit {result.returncode}):\n{result.stderr[-3000:]}")
        return result.stdout + result.stderr

    config = study_config(ROOT, args.configfile)
    disjoint_seeds(config["students"]["seeds"], args.seeds)  # before any work
    run("study A", *(["--configfile", str(args.configfile)] if args.configfile else []))  # reused if finished
    rep = prepare(ROOT, args.configfile, args.seeds, args.out)
    print(f"study A: {rep.first} (seeds {rep.seeds[0]}); study B: {rep.second} (seeds {rep.seeds[1]}), "
          f"with A's {', '.join(UPSTREAM)} ({', '.join(rep.linked) or 'none'} linked now)", flush=True)
    planned = planned_jobs(run("study B, dry run", "-n", *rep.args))
    upstream = sorted(UPSTREAM_RULES & set(planned))
    if upstream:
        raise SystemExit(f"study B would rerun {upstream}: its data or teacher differ from study A's "
                         f"(see `snakemake -n {' '.join(rep.args)}`)")
    if planned:
        print(f"study B plans {sum(planned.values())} jobs: " + ", ".join(f"{k} {v}" for k, v in planned.items()))
        run("study B", *rep.args)
    else:
        print("study B has finished")
    print()
    for name, folder, seeds in zip("AB", (rep.first, rep.second), rep.seeds):
        print(f"{name}: seeds {', '.join(map(str, seeds))} ({folder / 'hypotheses.csv'})")
    print("\n" + side_by_side(rep.first / "hypotheses.csv", rep.second / "hypotheses.csv"))
    print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))


if __name__ == "__main__":
    main()
