"""The teacher and the students side by side at the paper sizes: eager PyTorch against ONNX Runtime.

One run, at one thread and at all cores (``--threads``), batch 1, 224 x 224 slices, random weights (latency
does not depend on them):
the paper's TransUNet R50-ViT-B/16 (105M parameters) and SqueezeUNets of the given widths (0.4M and
wider). Each model and runtime is measured in a fresh process (``hkd.deploy.cost``): median and quartiles
of the latency over ``--runs`` timed runs after warm-up, peak memory. Then a 100-slice 512 x 512 CT volume
(NIfTI, written here) is segmented by the 0.4M student through ``hkd predict``'s whole path (reading,
preprocessing, the network in its faster runtime, resizing back, writing) in both upsampling modes.

    python benchmarks/predict.py [--widths 0.4M 1.5 4M] [--runs 20] [--threads 1 2] [--volume-only]

The volume part runs each mode in a fresh process and prints its wall time, the network's own time (the
model run on the volume's slices alone, in predict's batches) per volume and per slice, and the process's
peak memory: nearest, probabilities (the
default) and probabilities with ``--probabilities`` (the class probabilities written too), and how often
in-plane neighbours in the written labels differ (the default mode interpolates only there: random weights
give more such edges than a labelled abdominal CT has, so its time here errs high).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from hkd.data.preprocessing_record import record
from hkd.deploy import cost
from hkd.deploy.export import _with_metadata, to_onnx
from hkd.deploy.predict import BATCH, predict_file
from hkd.infer import runtime
from hkd.infer.grid import model_slices, windowed
from hkd.models import build_model

CLASSES = ["background", "spleen", "right_kidney", "left_kidney", "gallbladder", "liver", "stomach", "aorta",
           "pancreas"]


def _volume(path: Path, slices: int = 100, side: int = 512) -> Path:
    """A CT-like volume: air around a soft-tissue ellipse with a brighter organ, int16 HU, LPS."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:side, :side]
    body = ((x - side / 2) / (0.42 * side)) ** 2 + ((y - side / 2) / (0.32 * side)) ** 2 < 1
    organ = ((x - 0.38 * side) / (0.1 * side)) ** 2 + ((y - 0.45 * side) / (0.12 * side)) ** 2 < 1
    plane = np.where(body, 40, -1000) + np.where(organ, 60, 0)
    vol = (plane[..., None] + rng.normal(0, 15, (side, side, slices))).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.diag([-0.8, -0.8, 2.5, 1.0])), path)
    return path


MODES = {"nearest": ("nearest", False), "probabilities": ("probabilities", False),
         "probabilities + --probabilities": ("probabilities", True)}


def _one_volume(folder: Path, mode: str, threads: int) -> None:
    """In this (fresh) process: segment the volume once in ``mode``; print JSON of the seconds, the network's
    seconds on the same slices, and the peak resident memory."""
    from hkd.data.nifti import load_scan

    torch.set_num_threads(threads)
    model = runtime.load(folder / "s.onnx", threads=threads)
    upsample, probabilities = MODES[mode]
    scan = folder / "scan.nii.gz"
    t0 = time.perf_counter()
    predict_file(model, scan, folder / f"{upsample}{int(probabilities)}.nii.gz", upsample=upsample,
                 probabilities=probabilities)
    seconds = time.perf_counter() - t0
    prep = model.preprocessing
    image = windowed(load_scan(scan)[1], prep)
    slices = [model_slices(image[i:i + BATCH], 224, tuple(prep["scale"])) for i in range(0, len(image), BATCH)]
    t0 = time.perf_counter()
    for x in slices:
        model.run(x)
    network = time.perf_counter() - t0
    labels = np.asarray(nib.load(folder / f"{upsample}{int(probabilities)}.nii.gz").dataobj)
    changes = (labels[1:] != labels[:-1]).mean() + (labels[:, 1:] != labels[:, :-1]).mean()
    print(json.dumps({"seconds": seconds, "network": network, "class_changes": float(changes),
                      # VmHWM: this process's own peak (ru_maxrss keeps the parent's peak across fork and exec)
                      "peak_mb": cost.status_mb("VmHWM")}))


def volume_table(threads: int) -> None:
    """A 512 x 512 x 100 volume through hkd predict, the 0.4M student in ONNX Runtime, each mode in a fresh
    process."""
    spec = {"arch": "squeezeunet", "width": "0.4M", "num_classes": 9}
    torch.manual_seed(0)
    network = build_model(spec).eval()
    prep = record({"hu_window": [-125, 275], "image_size": 224, "classes": CLASSES})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        proto, _ = to_onnx(network, 224, spec)
        proto = _with_metadata(proto, {runtime.META_PREPROCESSING: json.dumps(prep),
                                       runtime.META_SPEC: json.dumps(spec)})
        (tmp / "s.onnx").write_bytes(proto.SerializeToString())
        _volume(tmp / "scan.nii.gz")
        print(f"\n512 x 512 x 100 volume, 0.4M student (ONNX Runtime, {threads} thread(s), {BATCH} slices per "
              "step), reading and writing included, each mode in a fresh process")
        print(f"{'mode':34s} {'seconds':>8s} {'network s':>10s} {'ms/slice':>9s} {'ratio':>6s} {'peak MB':>8s} "
              f"{'edges %':>8s}")
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--child", str(tmp), mode, "--threads", str(threads)],
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            print(f"{mode:34s} {r['seconds']:>8.2f} {r['network']:>10.2f} {1000 * r['network'] / 100:>9.2f} "
                  f"{r['seconds'] / r['network']:>5.2f}x "
                  f"{r['peak_mb']:>8.0f} {100 * r['class_changes']:>8.2f}")
        print("edges %: in-plane neighbours of another class in the written labels, per pixel; the default mode "
              "interpolates only there. These random weights give more than a labelled abdominal CT has (0.69% in "
              "a Synapse case's ground truth), so the default mode's ratio here errs high")


def slice_table(specs: dict, threads: int, runs: int, teacher: str | None) -> None:
    """Per-slice latency of every model in every runtime and precision, batch 1, ``threads`` threads."""
    rows = []
    for name, spec in specs.items():
        torch.manual_seed(0)
        rows += cost.model_cost(name, build_model(spec), spec, 224, threads=threads, runs=runs)
    print(f"\n224 x 224, batch 1, {threads} thread(s), median [quartiles] of {runs} runs after warm-up; "
          "max |logit difference| from PyTorch fp32 in brackets after each reduced precision")
    kinds = list(dict.fromkeys((r["runtime"], r["precision"]) for r in rows))
    print(f"{'model':26s} {'params':>12s} {'GFLOPs':>7s} " + " ".join(f"{k + ' ' + p + ' ms':>22s}" for k, p in kinds))
    by = {(r["model"], r["runtime"], r["precision"]): r for r in rows}
    for name in specs:
        e = by[(name, "pytorch", "fp32")]
        cells = []
        for k, p in kinds:
            r = by[(name, k, p)]
            extra = f" ({r['max_abs_logit_diff']:.2g})" if p != "fp32" else ""
            cells.append(f"{r['latency_ms']:.1f} [{r['latency_q25_ms']:.1f}, {r['latency_q75_ms']:.1f}]{extra}")
        print(f"{name:26s} {e['params']:>12,d} {e['gflops']:>7.2f} " + " ".join(f"{c:>22s}" for c in cells))
    for name in list(specs)[1:] if teacher else []:
        reduced = cost.ratio(rows, teacher, name, "bf16")
        print(f"{teacher} / {name}: {cost.ratio(rows, teacher, name):.1f}x per slice (each in its fastest fp32 "
              f"runtime)" + (f", {reduced:.1f}x in bf16" if reduced else "") + "; FLOPs "
              f"{by[(teacher, 'pytorch', 'fp32')]['gflops'] / by[(name, 'pytorch', 'fp32')]['gflops']:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", nargs="+", default=["0.4M", "1.5", "4M"])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}),
                    help="thread counts, each measured in turn (default: 1 and all cores)")
    ap.add_argument("--no-teacher", action="store_true", help="students only")
    ap.add_argument("--volume-only", action="store_true", help="only the volume's table")
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _one_volume(Path(args.child[0]), args.child[1], args.threads[0])
    teacher = None if args.no_teacher else "TransUNet R50-ViT-B/16"
    specs = {teacher: {"arch": "transunet", "num_classes": 9, "img_size": 224}} if teacher else {}
    specs |= {f"SqueezeUNet {w}": {"arch": "squeezeunet", "width": w, "num_classes": 9} for w in args.widths}
    for threads in [] if args.volume_only else args.threads:
        torch.set_num_threads(threads)
        slice_table(specs, threads, args.runs, teacher)
    for threads in args.threads:
        volume_table(threads)


if __name__ == "__main__":
    main()
