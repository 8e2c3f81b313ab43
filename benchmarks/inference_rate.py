"""Inference rate of the teacher and every SqueezeUNet preset on this machine's device (PyTorch), in slices/s.

Per model, per batch size (default 1 and 32), per precision (fp32; bf16 autocast where the device is
CUDA or ``--bf16`` asks) and per memory format (channels-first, channels-last): the median of ``--runs``
timed forward passes after warm-up, synchronised, on random slices of ``--size`` px (the rate does not
depend on the values). Models are built from the config's teacher spec and the presets at random weights. Prints a table; ``--json`` writes its rows.

    python benchmarks/inference_rate.py                                  # the paper teacher, 224 px
    python benchmarks/inference_rate.py --config config.yaml --size 48 --batches 1 2 --runs 2  # tiny
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def seconds_per_pass(model: torch.nn.Module, batch: int, size: int, device: torch.device, bf16: bool,
                     runs: int, channels_last: bool = False) -> float:
    """Median seconds of one forward pass of ``batch`` slices, after three warm-up passes."""
    x = torch.rand(batch, 1, size, size, device=device)
    if channels_last:  # the model is converted by the caller
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in range(runs + 3):
            sync(device)
            t0 = time.perf_counter()
            model(x)
            sync(device)
            if i >= 3:
                times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "workflow" / "configs" / "synapse-paper.yaml")
    ap.add_argument("--size", type=int, default=None, help="slice size (default: the config's data.image_size)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--runs", type=int, default=20, help="timed passes per cell (median)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--bf16", action="store_true", help="time bf16 autocast on the CPU too")
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from hkd.deploy.cost import at_size, flops
    from hkd.models import SQUEEZEUNET_PRESETS, count_parameters

    cfg = yaml.safe_load(args.config.read_text())
    size = args.size or cfg["data"]["image_size"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    precisions = ["fp32"] + (["bf16"] if device.type == "cuda" or args.bf16 else [])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the conv algorithms for each fixed shape, chosen once
    specs = [("teacher", cfg["teacher"]["model"])] + [
        (f"student {p}", {"arch": "squeezeunet", "width": p}) for p in SQUEEZEUNET_PRESETS]
    print(f"device: {name}; {size} px; median of {args.runs} passes")
    print(f"{'model':<14} {'params':>8} {'GFLOP':>7} {'precision':<9} {'format':<8} " + " ".join(
        f"{f'b{b} slices/s':>13}" for b in args.batches))
    rows = []
    for label, spec in specs:
        model = at_size(spec, size)
        gflop = flops(model, size) / 1e9
        model = model.to(device)
        for fmt in ("NCHW", "NHWC"):
            model = model.to(memory_format=torch.channels_last if fmt == "NHWC" else torch.contiguous_format)
            for precision in precisions:
                rates = {b: b / seconds_per_pass(model, b, size, device, precision == "bf16", args.runs, fmt == "NHWC")
                         for b in args.batches}
                rows.append({"model": label, "params": count_parameters(model), "gflop": gflop,
                             "precision": precision, "format": fmt, "slices_per_s": rates})
                print(f"{label:<14} {count_parameters(model) / 1e6:>7.2f}M {gflop:>7.2f} {precision:<9} {fmt:<8} "
                      + " ".join(f"{rates[b]:>13.0f}" for b in args.batches))
        del model
    if args.json:
        args.json.write_text(json.dumps({"device": name, "size": size, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
