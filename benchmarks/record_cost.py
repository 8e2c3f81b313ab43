"""What recording hkd's outputs costs: an atomic write with its record (size, time, SHA-256, under the
folder's lock) against the same write unrecorded, side by side, for files of a few sizes up to a paper
teacher's resume state (about 1.3 GB with its optimizer state).

    python benchmarks/record_cost.py [--sizes-mb 1 100 1300] [--repeats 3]

Prints, per size, the median seconds of each kind of write and the ratio; the record's share is the
SHA-256 of the new file (read back from the page cache) plus two small JSON rewrites.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from hkd.io import atomic_path


def _write(path: Path, data: bytes, own: bool) -> float:
    started = time.perf_counter()
    with atomic_path(path, own=own) as tmp:
        tmp.write_bytes(data)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mb", type=float, nargs="+", default=[1, 100, 1300])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print("| file | unrecorded s | recorded s | ratio |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for mb in args.sizes_mb:
            data = np.random.default_rng(0).integers(0, 255, int(mb * 2**20), dtype=np.uint8).tobytes()
            times = {True: [], False: []}
            for _ in range(args.repeats):  # alternated, so both see the same machine
                for own in (False, True):
                    times[own].append(_write(Path(folder) / f"{own}.bin", data, own))
            plain, recorded = statistics.median(times[False]), statistics.median(times[True])
            print(f"| {mb:g} MB | {plain:.3f} | {recorded:.3f} | {recorded / plain:.2f}x |")


if __name__ == "__main__":
    main()
