"""Training-step time of the default's students in each memory format and precision, side by side.

For each width, four runs of the same student on the same prepared data (fp32, channels-last, bf16
autocast, bf16 + channels-last) take one training step each in turn on identical batches, so all see the
same machine load; it prints the median step and its speed-up over fp32. One thread, as the default's jobs.

    python benchmarks/student_step.py --data results/default/data/prepared [--widths 0.4M 1.5] [--steps 14]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hkd.train import augment
from hkd.train.config import TrainConfig
from hkd.train.trainer import Run

VARIANTS = {"fp32": {}, "channels-last": {"channels_last": True}, "bf16": {"precision": "bf16"},
            "bf16+channels-last": {"precision": "bf16", "channels_last": True}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a prepared dataset (results/<study>/data/prepared)")
    ap.add_argument("--widths", nargs="+", default=["0.4M", "1.5"])
    ap.add_argument("--steps", type=int, default=14, help="timed steps per variant (the first 3 are warm-up)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for width in args.widths:
            runs = {name: Run(TrainConfig.from_dict({"model": {"arch": "squeezeunet", "width": width}, "epochs": 1,
                                                     "batch_size": 4, "optimizer": "adamw", "lr": 0.003,
                                                     "device": "cpu", **options}),
                              args.data, Path(tmp) / name, None, None, progress=False)
                    for name, options in VARIANTS.items()}
            n = len(next(iter(runs.values())).train_set)
            times = {name: [] for name in VARIANTS}
            gen = torch.Generator().manual_seed(0)
            for step in range(args.steps):
                idx, aug = torch.randperm(n, generator=gen)[:4], augment.sample_params(4, gen)
                for name in (list(VARIANTS) if step % 2 else list(VARIANTS)[::-1]):  # alternate the order
                    t0 = time.perf_counter()
                    runs[name].train_step(idx, aug)
                    times[name].append(time.perf_counter() - t0)
            medians = {name: statistics.median(t[3:]) for name, t in times.items()}
            print(f"width {width}: " + "  ".join(f"{name} {m * 1000:.0f} ms ({medians['fp32'] / m:.2f}x)"
                                               for name, m in medians.items()))


if __name__ == "__main__":
    main()
