"""The teacher and the students side by side at the paper sizes: eager PyTorch against ONNX Runtime.

One run, one CPU thread, batch 1, 224 x 224 slices, random weights (latency does not depend on them):
the paper's TransUNet R50-ViT-B/16 (105M parameters) and SqueezeUNets of the given widths (0.4M and
wider). Each model and runtime is measured in a fresh process (``hkd.deploy.cost``): median and quartiles
of the latency over ``--runs`` timed runs after warm-up, peak memory. Then a 100-slice 512 x 512 CT volume
(NIfTI, written here) is segmented by the 0.4M student through ``hkd predict``'s whole path (reading,
preprocessing, the network in its faster runtime, resizing back, writing) in both upsampling modes.

    python benchmarks/predict.py [--widths 0.4M 1.5 4M] [--runs 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from hkd.data.preprocessing_record import record
from hkd.deploy import cost, runtime
from hkd.deploy.export import _with_metadata, to_onnx
from hkd.deploy.predict import predict_file
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", nargs="+", default=["0.4M", "1.5", "4M"])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-teacher", action="store_true", help="students only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    specs = {} if args.no_teacher else {"TransUNet R50-ViT-B/16": {"arch": "transunet", "num_classes": 9,
                                                                   "img_size": 224}}
    specs |= {f"SqueezeUNet {w}": {"arch": "squeezeunet", "width": w, "num_classes": 9} for w in args.widths}
    rows = []
    for name, spec in specs.items():
        torch.manual_seed(0)
        rows += cost.model_cost(name, build_model(spec), spec, 224, threads=args.threads, runs=args.runs)
    print(f"\n224 x 224, batch 1, {args.threads} thread(s), median [quartiles] of {args.runs} runs after warm-up")
    print(f"{'model':26s} {'params':>12s} {'GFLOPs':>7s} {'eager ms':>24s} {'ONNX Runtime ms':>24s} "
          f"{'ORT/eager':>9s} {'peak MB eager/ORT':>18s}")
    by = {(r["model"], r["runtime"]): r for r in rows}
    for name in specs:
        e, o = by[(name, "pytorch")], by[(name, "onnxruntime")]
        fmt = lambda r: f"{r['latency_ms']:.1f} [{r['latency_q25_ms']:.1f}, {r['latency_q75_ms']:.1f}]"
        print(f"{name:26s} {e['params']:>12,d} {e['gflops']:>7.2f} {fmt(e):>24s} {fmt(o):>24s} "
              f"{e['latency_ms'] / o['latency_ms']:>8.2f}x {e['peak_mb']:>8.0f}/{o['peak_mb']:<8.0f}")
    if not args.no_teacher:
        teacher = "TransUNet R50-ViT-B/16"
        for name in list(specs)[1:]:
            print(f"{teacher} / {name}: {cost.ratio(rows, teacher, name):.1f}x per slice (each in its fastest "
                  f"runtime); FLOPs {by[(teacher, 'pytorch')]['gflops'] / by[(name, 'pytorch')]['gflops']:.1f}x")

    # a 512 x 512 x 100 volume through hkd predict, the 0.4M student in ONNX Runtime
    spec = {"arch": "squeezeunet", "width": "0.4M", "num_classes": 9}
    torch.manual_seed(0)
    network = build_model(spec).eval()
    prep = record({"hu_window": [-125, 275], "image_size": 224, "classes": CLASSES})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        proto, _ = to_onnx(network, 224, spec)
        proto = _with_metadata(proto, {runtime.META_PREPROCESSING: json.dumps(prep), runtime.META_SPEC: json.dumps(spec)})
        (tmp / "s.onnx").write_bytes(proto.SerializeToString())
        scan = _volume(tmp / "scan.nii.gz")
        model = runtime.load(tmp / "s.onnx", threads=args.threads)
        predict_file(model, scan, tmp / "warm.nii.gz", upsample="nearest")  # warm-up
        for upsample in ("nearest", "probabilities"):
            t0 = time.perf_counter()
            predict_file(model, scan, tmp / f"{upsample}.nii.gz", upsample=upsample)
            print(f"512 x 512 x 100 volume, 0.4M student (ONNX Runtime, {args.threads} thread(s)), --upsample "
                  f"{upsample}: {time.perf_counter() - t0:.2f} s, reading and writing included")


if __name__ == "__main__":
    main()
