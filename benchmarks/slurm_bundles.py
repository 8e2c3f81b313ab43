"""Wall time of a small study through the SLURM profile, with the profile's bundles and without them.

Runs the same study twice on a running SLURM cluster, from a copy of this repository's committed files:
once with ``workflow/profiles/slurm`` as it is (students four to an allocation sharing one GPU,
evaluations eight to an allocation), once with its ``groups``/``group-components`` removed (one
allocation per job). Prints the number of sbatch submissions and the wall time of each run, and the
span of the students' training (first student started to last finished, from their logs).

On a node with one GPU, unbundled students queue for the GPU one after another; a bundle trains them
side by side on it. (`.ci/slurm-cluster.sh` starts a one-node cluster with one fake GPU; there the
students train on the CPU, so the figures say how the scheduling packs them, not how fast a GPU is.)

    python benchmarks/slurm_bundles.py [--students 4] [--epochs 2] [--cores 2]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from fast_step import export_revision  # noqa: E402  (same folder)

REPO = Path(__file__).resolve().parents[1]


def study(out: Path, students: int, epochs: int) -> dict:
    """The default config, shrunk: 6 small cases, 2 teacher epochs, ``students`` students (scratch and logits,
    widths 0.25, 0.5, ...)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    widths = [str(0.25 * (i + 1)) for i in range((students + 1) // 2)]
    config.update({
        "out": str(out),
        "data": {**config["data"], "phantom": {**config["data"]["phantom"], "cases": 6, "size": 64,
                                                "slices": [10, 14]}, "image_size": 32},
        "train": {**config["train"], "epochs": epochs, "batch_size": 8, "threads": 1},
        "teacher": {**config["teacher"], "train": {"epochs": 2}},
        "students": {**config["students"], "methods": ["scratch", "logits"], "widths": widths, "seeds": [0]},
        "report": {**config["report"], "n_slices": 1, "context_slices": 4},
    })
    return config


def run(repo: Path, profile: Path, out: Path) -> tuple[float, int, float]:
    """Wall time, number of sbatch calls and the students' training span of one run."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", str(profile), "--verbose",
                           "--slurm-init-seconds-before-status-checks", "5"],
                          cwd=repo, capture_output=True, text=True)
    wall = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    (repo / "snakemake.log").write_text(log)
    if proc.returncode:
        sys.exit(f"snakemake failed in {repo}:\n{log[-4000:]}")
    calls = sum(line.startswith("sbatch call:") for line in log.splitlines())
    return wall, calls, students_span(out)


def students_span(out: Path) -> float:
    """Seconds from the first student's start (its metrics.json's time less its benchmark seconds) to the
    last student's end."""
    runs = [p for p in (out / "models" / "students").glob("*/w*/s*") if (p / "metrics.json").exists()]
    ends = [(p / "metrics.json").stat().st_mtime for p in runs]
    starts = []
    for p in runs:
        method, width, seed = p.parts[-3], p.parts[-2][1:], p.parts[-1][1:]
        bench = out / "benchmarks" / "train_student" / f"{method}_w{width}_s{seed}.tsv"
        seconds = float(pd.read_csv(bench, sep="\t")["s"].iloc[0])  # Snakemake's benchmark: wall seconds
        starts.append((p / "metrics.json").stat().st_mtime - seconds)
    return max(ends) - min(starts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--cores", type=int, default=2, help="the profile's cores: CPUs of one allocation")
    ap.add_argument("--keep", type=Path, help="keep both runs (repository copy, study, snakemake.log) here")
    args = ap.parse_args()
    profile_src = REPO / "workflow" / "profiles" / "slurm" / "config.v8+.yaml"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.keep:
            tmp = args.keep
            args.keep.mkdir(parents=True)
        for name in ("bundled", "one job per allocation"):
            repo = Path(tmp) / re.sub(r"\W+", "_", name)
            export_revision("HEAD", repo, ".")
            out = repo / "study"
            (repo / "config.yaml").write_text(yaml.safe_dump(study(out, args.students, args.epochs)))
            profile = yaml.safe_load(profile_src.read_text())
            profile["cores"] = args.cores
            if name != "bundled":
                profile.pop("groups"), profile.pop("group-components")
            (repo / "profile").mkdir()
            (repo / "profile" / "config.v8+.yaml").write_text(yaml.safe_dump(profile))
            results[name] = run(repo, repo / "profile", out)
    print(f"small study through the SLURM profile, {args.students} students of {args.epochs} epochs, "
          f"1 thread each, at most {args.cores} CPUs per allocation")
    print(f"{'':<26}{'sbatch calls':>13}{'wall (s)':>10}{'students span (s)':>19}")
    for name, (wall, calls, span) in results.items():
        print(f"{name:<26}{calls:>13}{wall:>10.0f}{span:>19.0f}")


if __name__ == "__main__":
    main()
