"""Benchmark: where the test suite's time goes, per kind and per file.

Runs the README's test command with ``--junitxml`` (or reads JUnit files written before) and prints the
time per kind of test (``unit``, ``dry run``, ``study``, ``install``: ``tests/timing.py`` records each
test's kind) and per file (its path under ``tests/``, folder included), summed over tests (set-up, body and
tear-down; with pytest-xdist the sum is worker time, more than the wall time printed beside it), and the
slowest tests.

Usage:
  python benchmarks/test_times.py                      # runs `python -m pytest -q -n 2 --dist loadgroup`
  python benchmarks/test_times.py -- -m "not slow"     # pytest arguments after --
  python benchmarks/test_times.py --junit run.xml      # an earlier run's JUnit file
  python benchmarks/test_times.py --junit before.xml --kinds-from after.xml   # kinds of a run that
                                                       # recorded none (before tests/timing.py) by test id
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup"]


def read_junit(path: Path) -> list[dict]:
    """One row per test: id, file, kind (None if not recorded), seconds, outcome."""
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        file = Path(case.get("file") or case.get("classname", "").replace(".", "/") + ".py")
        file = file.relative_to("tests") if file.parts[:1] == ("tests",) else Path(file.name)  # e.g. unit/test_x.py
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        outcome = "failed" if case.find("failure") is not None or case.find("error") is not None else \
            "skipped" if case.find("skipped") is not None else "passed"
        name = case.get("name").split("@")[0]  # without pytest-xdist's group suffix
        rows.append({"id": f"{case.get('classname')}::{name}", "file": file.as_posix(),
                     "kind": props.get("kind"), "seconds": float(case.get("time") or 0), "outcome": outcome})
    return rows


def table(rows: list[dict], key: str, total: float) -> str:
    sums, counts = defaultdict(float), defaultdict(int)
    for row in rows:
        sums[row[key] or "(not recorded)"] += row["seconds"]
        counts[row[key] or "(not recorded)"] += 1
    width = max(len(k) for k in sums)
    lines = [f"{key:<{width}}  tests  seconds  share"]
    for name in sorted(sums, key=sums.get, reverse=True):
        lines.append(f"{name:<{width}}  {counts[name]:>5}  {sums[name]:>7.0f}  {sums[name] / total:>5.0%}")
    lines.append(f"{'total':<{width}}  {len(rows):>5}  {total:>7.0f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--junit", type=Path, help="read this JUnit file instead of running the tests")
    parser.add_argument("--kinds-from", type=Path, help="take each test's kind from this JUnit file")
    parser.add_argument("--top", type=int, default=15, help="how many of the slowest tests to list")
    parser.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = parser.parse_args()
    wall = None
    if args.junit:
        path = args.junit
    else:
        path = Path(tempfile.mkdtemp()) / "tests.xml"
        started = time.perf_counter()
        subprocess.run([*COMMAND, f"--junitxml={path}", *args.pytest_args], cwd=REPO)
        wall = time.perf_counter() - started
    rows = read_junit(path)
    if args.kinds_from:
        kinds = {r["id"]: r["kind"] for r in read_junit(args.kinds_from)}
        for row in rows:
            row["kind"] = row["kind"] or kinds.get(row["id"])
    total = sum(r["seconds"] for r in rows)
    outcomes = defaultdict(int)
    for row in rows:
        outcomes[row["outcome"]] += 1
    print(f"{path}: " + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
          + (f"; wall time {wall:.0f} s" if wall else ""))
    print("\n" + table(rows, "kind", total))
    print("\n" + table(rows, "file", total))
    print(f"\nslowest {args.top}:")
    for row in sorted(rows, key=lambda r: r["seconds"], reverse=True)[:args.top]:
        print(f"{row['seconds']:>7.1f}  {row['kind'] or '-':<8}  {row['id']}")


if __name__ == "__main__":
    main()
