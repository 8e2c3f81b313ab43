"""What a live-curve tracker (hkd.train.tracking) costs a training run: the one-off cost of opening it
(imports, the MLflow experiment and run, the parameters) and the cost per epoch, on the rows of a real
``log.csv`` (a distilled run's has the most columns: its per-block gradient ratios).

    python benchmarks/tracker_cost.py --log results/default/models/students/logits/w0.4M/s0/log.csv

Each tracker writes ``--epochs`` epochs (the log's rows repeated, renumbered) into a fresh temporary folder,
in a fresh process that has imported torch, as a training job has (so the one-off cost includes the
tracker's own imports); the per-epoch cost is the median over those
epochs, set beside the log's own median epoch seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

CHILD = """
import json, sys, time
import pandas, torch  # a training job has imported them already
t0 = time.perf_counter()
from hkd.train.tracking import open_tracker
kind, folder, rows = sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read())
tracker = open_tracker(kind, folder, "bench", {"model": {"arch": "squeezeunet"}, "lr": 0.003},
                       store=folder + "/mlruns")
tracker.start([])
t1 = time.perf_counter()
per_epoch = []
for row in rows:
    t = time.perf_counter()
    tracker.epoch(row)
    per_epoch.append(time.perf_counter() - t)
print(json.dumps({"open": t1 - t0, "per_epoch": per_epoch}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log", required=True, type=Path, help="a run's log.csv")
    p.add_argument("--epochs", type=int, default=50)
    args = p.parse_args()
    log = pd.read_csv(args.log)
    rows = [{**log.iloc[i % len(log)].to_dict(), "epoch": i + 1} for i in range(args.epochs)]
    epoch_seconds = float(log["seconds"].median())
    print(f"{args.log}: {len(log.columns)} columns, median epoch {epoch_seconds:.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "rows.json").write_text(json.dumps(rows))
        for kind in ("none", "tensorboard", "mlflow"):
            folder = Path(tmp) / kind
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CHILD, kind, str(folder), str(Path(tmp) / "rows.json")],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            per_epoch = statistics.median(result["per_epoch"])
            print(f"{kind:12s} open {result['open']:.2f} s, per epoch {per_epoch * 1000:.2f} ms "
                  f"({per_epoch / epoch_seconds:.3%} of an epoch), process {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
