"""Ingest speed and memory: seconds per case and peak memory for a 512x512x150 phantom case.

Each measurement runs ``hkd`` preprocessing in a fresh process, so the peak resident memory it
reports (resident size sampled during the run, minus before it) belongs to one case alone.
Targets: under 3 s per case on a 2-core machine, peak under 3x one float32 volume.

    python benchmarks/ingest.py [--size 512] [--slices 150] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, sys, threading, time
from hkd.data.preprocess import prepare_dataset
from hkd.data.readers import iter_cases
root, out, part = sys.argv[1], sys.argv[2], sys.argv[3]
label_map = {i: i for i in range(14)}
classes = [f"c{i}" for i in range(14)]
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
base = peak = rss()
done = False
def sample():  # ru_maxrss cannot be reset after the imports, so sample the resident size instead
    global peak
    while not done:
        peak = max(peak, rss())
        time.sleep(0.002)
thread = threading.Thread(target=sample)
thread.start()
split = {"train": [], "val": [], "test": []}
split[part] = ["0001"]
t0 = time.perf_counter()
prepare_dataset(iter_cases(root, "rawdata", ["0001"]), split, out, image_size=224, hu_window=(-125, 275),
                label_map=label_map, classes=classes, progress=False)
seconds = time.perf_counter() - t0
done = True
thread.join()
print(json.dumps({"seconds": seconds, "peak_mb": (peak - base) / 2**20}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--slices", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from hkd.data.phantom import write_phantom_dataset

    volume_mb = args.size * args.size * args.slices * 4 / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "RawData"
        write_phantom_dataset(root, 1, seed=0, size=args.size, slices=(args.slices, args.slices))
        print(f"case: {args.size}x{args.size}x{args.slices} phantom; one float32 volume = {volume_mb:.0f} MB")
        print(f"{'part':<6} {'run':>3} {'seconds':>8} {'peak MB':>8} {'peak / volume':>14}")
        for part, what in (("train", "slices at 224"), ("test", "native volume")):
            for r in range(args.repeats):
                res = subprocess.run([sys.executable, "-c", CHILD, str(root), str(Path(tmp) / f"out{r}{part}"), part],
                                     capture_output=True, text=True, check=True)
                m = json.loads(res.stdout.strip().splitlines()[-1])
                print(f"{part:<6} {r:>3} {m['seconds']:>8.2f} {m['peak_mb']:>8.0f} {m['peak_mb'] / volume_mb:>13.2f}x"
                      f"   ({what})")


if __name__ == "__main__":
    main()
