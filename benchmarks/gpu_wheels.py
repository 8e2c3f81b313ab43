"""Fetch the wheels the lent GPU machine lacks, for ``benchmarks/gpu_check.sh`` (into ``.whl/``, git-ignored).

The GPU machine's python3 is 3.12 with torch and the scientific stack, but without Snakemake, nibabel,
medpy, captum or jsonschema, and it reaches no package index. This script walks the requirements of the
``hkd`` installed in this environment (no extras), at this environment's versions, leaves out what the
machine's image holds (``benchmarks/gpu_device_packages.txt``) and what no default job imports there
(``SKIP``, with the reason), and downloads the rest as wheels for CPython 3.12 on x86-64 Linux, with
``--no-deps``: the list is the closure. It fails if the wheels exceed the device tool's budget (60 MiB).

    python benchmarks/gpu_wheels.py [--dest .whl]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
LIMIT_MIB = 60
# Never carried, with their requirements: what one machine running the default study does not import.
SKIP = {
    "simpleitk": "medpy's image I/O (medpy.io), which hkd never imports; a 50 MB wheel",
    "snakemake-executor-plugin-slurm": "the SLURM executor: the check runs on one machine",
    "snakemake-executor-plugin-slurm-jobstep": "the SLURM executor's job step",
    "torch": "the machine's own CUDA build is the one to measure",
}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "manylinux_2_24_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64")


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def device_packages() -> set[str]:
    lines = (REPO / "benchmarks" / "gpu_device_packages.txt").read_text().splitlines()
    return {normalised(line) for line in lines if line.strip() and not line.startswith("#")}


def closure(root: str = "hkd") -> dict[str, str]:
    """Every distribution ``root`` needs (no extras, markers of this Python), name -> installed version."""
    found: dict[str, str] = {}
    todo = [Requirement(r) for r in md.requires(root) or [] if "extra ==" not in r]
    while todo:
        req = todo.pop()
        name = normalised(req.name)
        if name in found or name in SKIP or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        dist = md.distribution(req.name)
        found[name] = dist.version
        todo.extend(Requirement(r) for r in dist.requires or [])
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=REPO / ".whl")
    args = ap.parse_args()
    have = device_packages()
    wanted = {n: v for n, v in sorted(closure().items()) if n not in have}
    shutil.rmtree(args.dest, ignore_errors=True)
    args.dest.mkdir(parents=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for name, version in wanted.items():
        # A package published as source only is built here into a wheel, which must be pure Python (as
        # connection-pool's is); anything compiled must come as a CPython 3.12 wheel.
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                              "--python-version", "3.12", "--implementation", "cp", *platforms,
                              "-d", str(args.dest), f"{name}=={version}"], capture_output=True, text=True)
        if got.returncode != 0:
            built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(args.dest),
                                    f"{name}=={version}"], capture_output=True, text=True)
            wheels = [p for p in args.dest.glob("*.whl") if normalised(p.name.split("-")[0]) == name]
            if built.returncode != 0 or not wheels or not all(p.name.endswith("-none-any.whl") for p in wheels):
                sys.exit(f"{name}=={version}: no wheel for CPython 3.12 and no pure-Python build\n"
                         f"{got.stderr.strip()[-400:]}")
    total = sum(p.stat().st_size for p in args.dest.glob("*.whl")) / 2**20
    for n, v in wanted.items():
        print(f"  {n}=={v}")
    print(f"{len(wanted)} wheels in {args.dest}: {total:.1f} MiB (budget {LIMIT_MIB} MiB); skipped: "
          + "; ".join(f"{k} ({why})" for k, why in SKIP.items()))
    if total > LIMIT_MIB:
        sys.exit(f"the wheels are {total:.1f} MiB, over the {LIMIT_MIB} MiB the device takes")


if __name__ == "__main__":
    main()
