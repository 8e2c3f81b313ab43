"""The trainer's fast-step options against the plain step, timed in turn on identical batches.

Each variant is one training run (same model, seed and data) in its own worker process, because one of
the options (``retain_freed_memory``) changes how the whole process allocates memory. The parent hands
every worker the same batch and augmentation in turn and times one ``Run.train_step`` each, so all
variants see the same machine load; the ratio is the median over steps of plain time / variant time.
After the timed steps it compares every variant's weights with the plain run's: 0 when the update is
bit-identical. ``--noise`` adds the plain step on one thread (another reduction order in every matrix
product), for a scale of what "numerical noise" means for those weights.

Variants: ``plain`` (every fast-step option off), ``fast`` (the defaults: fused optimizer update, freed
host memory kept), with ``--channels-last`` also ``fast+channels_last``, and with ``--against REV`` the
step of an earlier revision's code (each worker draws the augmentation from the same seed with its own
code, so the batches are identical where the augmentation code is).

    python benchmarks/fast_step.py [--model transunet] [--threads 2] [--batch 4] [--steps 8] [--noise]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from paper_study import make_data  # noqa: E402  (same folder)

MODELS = {
    "transunet": {"arch": "transunet"},  # R50-ViT-B/16
    "squeezeunet": {"arch": "squeezeunet", "width": "0.4M"},
}
PLAIN = {"fused": False, "retain_freed_memory": False, "channels_last": False}
FAST = {"fused": True, "retain_freed_memory": True, "channels_last": False}


def worker(conn, model: dict, options: dict, threads: int, batch: int, optimizer: str, prepared: str,
           code: str | None) -> None:
    if code:  # another revision's hkd package
        sys.path.insert(0, code)
    import torch

    from hkd.train import augment
    from hkd.train.config import TrainConfig
    from hkd.train.trainer import Run

    torch.set_num_threads(threads)
    keys = TrainConfig.__dataclass_fields__  # an older revision lacks the newer options: it has them off
    cfg = TrainConfig.from_dict({k: v for k, v in {"model": model, "batch_size": batch, "device": "cpu",
                                                   "optimizer": optimizer, **options}.items() if k in keys})
    with tempfile.TemporaryDirectory() as out:
        run = Run(cfg, Path(prepared), Path(out), None, None, progress=False)
        run.model.train()
        conn.send("ready")
        while (msg := conn.recv()) is not None:
            step, idx, aug_seed = msg
            aug = augment.sample_params(batch, torch.Generator().manual_seed(aug_seed))
            torch.manual_seed(step)  # the same dropout masks in every variant
            t0 = time.perf_counter()
            run.train_step(idx, aug)
            conn.send(time.perf_counter() - t0)
        conn.send(torch.cat([p.detach().float().flatten() for p in run.model.parameters()]).numpy())


def export_revision(rev: str, dest: Path, *paths: str) -> str:
    """``paths`` (default: the ``hkd`` package) of git revision ``rev`` of this repository, unpacked under ``dest``."""
    dest.mkdir(parents=True)
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, *(paths or ("hkd",))], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return str(dest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="transunet")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="timed steps (after one warm-up step)")
    ap.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    ap.add_argument("--channels-last", action="store_true", help="also time fast + channels-last")
    ap.add_argument("--noise", action="store_true", help="also run plain on 1 thread (untimed)")
    ap.add_argument("--against", metavar="REV", help="also time the step of this git revision's hkd (e.g. an older main)")
    args = ap.parse_args()

    import torch

    variants = {"plain": (PLAIN, args.threads, "fp32"), "fast": (FAST, args.threads, "fp32")}
    if args.channels_last:
        variants["fast+channels_last"] = ({**FAST, "channels_last": True}, args.threads, "fp32")
    noise = {}
    if args.noise:
        noise = {"plain, 1 thread": (PLAIN, 1, "fp32")}
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        n_slices = args.batch * 8
        code = {}
        if args.against:
            code[f"main@{args.against}"] = export_revision(args.against, Path(tmp) / "rev")
            variants[f"main@{args.against}"] = ({}, args.threads, "fp32")
        prepared = make_data(Path(tmp) / "prep", n_slices)
        workers = {}
        for name, (options, threads, precision) in {**variants, **noise}.items():
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(child, MODELS[args.model], {**options, "precision": precision},
                                                    threads, args.batch, args.optimizer, str(prepared),
                                                    code.get(name)))
            proc.start()
            workers[name] = (parent, proc)
        for parent, _ in workers.values():
            parent.recv()
        gen = torch.Generator().manual_seed(0)
        times = {name: [] for name in workers}
        for step in range(args.steps + 1):
            idx = torch.randperm(n_slices, generator=gen)[:args.batch]
            aug_seed = int(torch.randint(2**31, (1,), generator=gen))
            for name, (parent, _) in workers.items():
                parent.send((step, idx, aug_seed))
                elapsed = parent.recv()
                if step:  # the first step warms up
                    times[name].append(elapsed)
        weights = {}
        for name, (parent, proc) in workers.items():
            parent.send(None)
            weights[name] = parent.recv()
            proc.join()

    plain = weights["plain"]
    print(f"{args.model}, CPU {args.threads} threads, fp32, batch {args.batch}, {args.optimizer}; "
          f"{args.steps} steps timed in turn, one process per variant")
    print(f"{'variant':<24}{'median step (s)':>16}{'speed-up':>10}{'max |dw|':>11}{'rel. L2 dw':>12}")
    for name in workers:
        dw = weights[name] - plain
        rel = np.linalg.norm(dw) / np.linalg.norm(plain)
        if name in variants:
            ratio = statistics.median(p / v for p, v in zip(times["plain"], times[name]))
            timing = f"{statistics.median(times[name]):>16.3f}{ratio:>9.2f}x"
        else:
            timing = f"{'(noise scale)':>16}{'':>10}"
        print(f"{name:<24}{timing}{np.abs(dw).max():>11.2e}{rel:>12.2e}")
    print(f"weights compared after {args.steps + 1} steps; speed-up: median over steps of plain / variant")
    if args.against:
        old = times[f"main@{args.against}"]
        ratio = statistics.median(o / f for o, f in zip(old, times["fast"]))
        print(f"fast against main@{args.against}: {ratio:.2f}x (median over steps of its time / fast's time)")


if __name__ == "__main__":
    main()
