"""The trainer's fast-step options against the plain step, timed in turn on identical batches.

Builds two runs of the same model, seed and data in one process, one with ``fused`` (and, with
``--channels-last``, channels-last) and one with every fast-step option off, and times their
``Run.train_step`` alternately on the same batches, so both see the same machine load. Also reports
how far apart their weights are after the timed steps (0 when the update is bit-identical).

    python benchmarks/fast_step.py [--model transunet] [--threads 2] [--batch 4] [--steps 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from paper_study import make_data  # noqa: E402  (same folder)

MODELS = {
    "transunet": {"arch": "transunet"},  # R50-ViT-B/16
    "squeezeunet": {"arch": "squeezeunet", "width": "0.4M"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="transunet")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from hkd.train import augment
    from hkd.train.trainer import Run, TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        prepared = make_data(Path(tmp) / "prep", args.batch * (args.steps + 1))
        runs = {}
        for label, fast in (("plain", False), ("fast", True)):
            cfg = TrainConfig.from_dict({"model": MODELS[args.model], "batch_size": args.batch, "device": "cpu",
                                         "optimizer": args.optimizer, "precision": "fp32", "fused": fast,
                                         "channels_last": fast and args.channels_last})
            runs[label] = Run(cfg, prepared, Path(tmp) / label, None, None, progress=False)
            runs[label].model.train()
        gen = torch.Generator().manual_seed(0)
        times = {label: [] for label in runs}
        for i in range(args.steps + 1):
            idx = torch.randperm(len(runs["plain"].train_set), generator=gen)[:args.batch]
            aug = augment.sample_params(args.batch, gen)
            for label, run in runs.items():
                torch.manual_seed(i)  # the same dropout masks in both runs
                t0 = time.perf_counter()
                run.train_step(idx, aug)
                if i:  # the first step warms up
                    times[label].append(time.perf_counter() - t0)
        diff = max((a - b).abs().max().item() for a, b in zip(runs["plain"].model.parameters(),
                                                              runs["fast"].model.parameters()))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"{args.model}, CPU {args.threads} threads, fp32, batch {args.batch}, {args.optimizer}, "
          f"median of {args.steps} alternating steps")
    print(f"plain step {med['plain']:.3f} s, fast step {med['fast']:.3f} s: {med['plain'] / med['fast']:.2f}x; "
          f"largest weight difference after {args.steps + 1} steps: {diff:.2e}")


if __name__ == "__main__":
    main()
