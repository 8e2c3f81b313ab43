"""Training-step throughput of the teacher and the student presets.

Times forward + backward + SGD step (samples/s) and peak memory for the paper-size TransUNet
(224 input, batch 4) and every SqueezeUNet preset (224, batch 8), on the CPU with a fixed thread
count and, when available, on CUDA with bf16 autocast. Each CPU case runs in a fresh subprocess so
that its peak resident set size (``getrusage`` max RSS) is its own.

Each case also reports the step's floating-point work (``torch.utils.flop_counter``, one extra
untimed step) and the rate it achieved, next to the same machine's fp32 matrix-multiply rate with
the same thread count, measured in the same run: how close a step is to what the CPU can do at all.

    python benchmarks/train_step.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from hkd.models import SQUEEZEUNET_PRESETS, build_model, count_parameters  # noqa: E402
from hkd.train.losses import segmentation_loss  # noqa: E402

NUM_CLASSES = 9


def cases(size: int, teacher_batch: int, student_batch: int) -> dict[str, tuple[dict, int]]:
    teacher = {"arch": "transunet", "img_size": size, "num_classes": NUM_CLASSES}
    out = {"TransUNet R50-ViT-B/16": (teacher, teacher_batch)}
    for preset in SQUEEZEUNET_PRESETS:
        out[f"SqueezeUNet {preset}"] = ({"arch": "squeezeunet", "width": preset, "num_classes": NUM_CLASSES,
                                         "in_channels": 1}, student_batch)
    return out


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return sum(segmentation_loss(logits.float(), target).values())


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 ``torch.mm`` rate (GFLOP/s) of an n x n product with ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_case(spec: dict, batch: int, size: int, device: str, steps: int, warmup: int,
             channels_last: bool, bf16: bool) -> dict:
    torch.manual_seed(0)
    model = build_model(spec).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.rand(batch, 1, size, size, device=device)
    y = torch.randint(0, NUM_CLASSES, (batch, size, size), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if device.startswith("cuda"):
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:  # ru_maxrss is in KiB on Linux
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    median = sorted(times)[len(times) // 2]
    return {"params": count_parameters(model), "batch": batch, "sec_per_step": median,
            "gflop_per_step": counter.get_total_flops() / 1e9,
            "samples_per_s": batch / median, "best_samples_per_s": batch / min(times), "peak_mib": peak_mib}


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "?"
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]
    return " ".join(f for f in wanted if f in flags) or "none of " + ",".join(wanted)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--teacher-batch", type=int, default=4)
    ap.add_argument("--student-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per case (median reported)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto: CPU, plus CUDA when available")
    ap.add_argument("--only", default=None, help="run one case by name (substring match)")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False,
                    help="channels-last memory format")
    ap.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on the CPU too")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    all_cases = cases(args.size, args.teacher_batch, args.student_batch)
    if args.child:  # the parent passes the exact case name
        selected = {k: v for k, v in all_cases.items() if k == args.only}
    else:
        selected = {k: v for k, v in all_cases.items() if args.only is None or args.only.lower() in k.lower()}
    if not selected:
        ap.error(f"--only {args.only!r} matches none of {list(all_cases)}")

    if args.child:  # one CPU case in this process; print JSON
        torch.set_num_threads(args.threads)
        (name, (spec, batch)), = selected.items()
        res = run_case(spec, batch, args.size, "cpu", args.steps, args.warmup, args.channels_last, args.cpu_bf16)
        print(json.dumps(res))
        return

    devices = []
    if args.device in ("auto", "cpu"):
        devices.append("cpu")
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append("cuda")
    elif args.device == "cuda":
        ap.error("CUDA is not available")

    load_before = os.getloadavg()[0]
    gemm = matmul_gflops(args.threads) if "cpu" in devices else None
    rows = []
    for device in devices:
        for name, (spec, batch) in selected.items():
            if device == "cpu":
                cmd = [sys.executable, __file__, "--child", "--only", name, "--threads", str(args.threads),
                       "--size", str(args.size), "--teacher-batch", str(args.teacher_batch),
                       "--student-batch", str(args.student_batch), "--steps", str(args.steps),
                       "--warmup", str(args.warmup),
                       "--channels-last" if args.channels_last else "--no-channels-last"]
                if args.cpu_bf16:
                    cmd.append("--cpu-bf16")
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    sys.exit(f"{name} on cpu failed:\n{proc.stderr}")
                res = json.loads(proc.stdout.strip().splitlines()[-1])
            else:
                res = run_case(spec, batch, args.size, device, max(args.steps, 10), max(args.warmup, 3),
                               args.channels_last, True)
            rows.append((device, name, res))
            print(f"  done: {device} {name} {res['samples_per_s']:.2f} samples/s", file=sys.stderr)

    print(f"torch {torch.__version__}, python {platform.python_version()}, loss: 0.5 CE + 0.5 Dice, "
          f"optimiser: SGD(momentum 0.9), input {args.size}x{args.size}, "
          f"channels_last={args.channels_last}; {args.steps} timed step(s) after {args.warmup} warm-up, "
          f"samples/s from the median step, best from the fastest")
    print(f"load average (1 min) before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f} "
          f"(other processes on the same cores slow multi-threaded steps down)")
    print(f"cpu: {platform.processor() or platform.machine()}, {args.threads} thread(s), flags: {cpu_flags()}, "
          f"precision: {'bf16 autocast' if args.cpu_bf16 else 'fp32'}; memory = increase of max RSS "
          f"(getrusage) over the process's peak before the first step, i.e. gradients, optimiser state and "
          f"activations (not the weights)")
    if "cuda" in devices:
        print(f"cuda: {torch.cuda.get_device_name()}, bf16 autocast; memory = torch.cuda.max_memory_allocated")
    if gemm is not None:
        print(f"cpu fp32 matrix multiply (torch.mm 2048x2048, {args.threads} thread(s)): {gemm:.1f} GFLOP/s; "
              f"'of mm' = the step's GFLOP/s as a share of that rate")
    print()
    header = (f"| {'device':6} | {'model':24} | {'params':>12} | {'batch':>5} | {'s/step':>7} | {'samples/s':>9} "
              f"| {'best':>6} | {'peak MiB':>8} | {'GFLOP/step':>10} | {'GFLOP/s':>7} | {'of mm':>5} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for device, name, r in rows:
        rate = r["gflop_per_step"] / r["sec_per_step"]
        share = f"{rate / gemm:.0%}" if device == "cpu" and gemm else "-"
        print(f"| {device:6} | {name:24} | {r['params']:>12,} | {r['batch']:>5} | {r['sec_per_step']:>7.2f} | "
              f"{r['samples_per_s']:>9.2f} | {r['best_samples_per_s']:>6.2f} | {r['peak_mib']:>8.0f} | "
              f"{r['gflop_per_step']:>10.1f} | {rate:>7.1f} | {share:>5} |")


if __name__ == "__main__":
    main()
