"""Cost of a distilled training step over a scratch step, with the teacher online or cached.

Builds a small prepared dataset at 224 from the phantom, a paper-size TransUNet teacher
(R50-ViT-B/16, random weights: the cost does not depend on them) and the 0.4M SqueezeUNet student,
then times the trainer's own step (``Run.train_step``) for scratch, and for ``logits`` and
``latent`` distillation with the teacher run every step (on the augmented batch) and read from the
feature cache (exact only without augmentation, so those steps run un-augmented).

    python benchmarks/distill_step.py [--threads 2] [--batch 8] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

PAPER_TEACHER = {"arch": "transunet", "hidden_size": 768, "num_layers": 12, "num_heads": 12, "mlp_dim": 3072,
                 "block_units": [3, 4, 9], "resnet_width": 64, "decoder_channels": [256, 128, 64, 16]}
CLASSES = ["background", "spleen", "right_kidney", "left_kidney", "gallbladder", "liver", "stomach", "aorta",
           "pancreas"]
LABEL_MAP = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 0, 6: 5, 7: 6, 8: 7, 9: 0, 10: 0, 11: 8, 12: 0, 13: 0}


def make_data(root: Path, size: int) -> Path:
    from hkd.data.phantom import write_phantom_dataset
    from hkd.data.preprocess import prepare_dataset
    from hkd.data.readers import iter_cases

    write_phantom_dataset(root / "RawData", 3, seed=0, size=256, slices=(12, 12))
    split = {"train": ["0001", "0002"], "val": ["0003"], "test": []}
    prepare_dataset(iter_cases(root / "RawData", "rawdata", ["0001", "0002", "0003"]), split, root / "prep",
                    image_size=size, hu_window=(-125, 275), label_map=LABEL_MAP, classes=CLASSES, progress=False)
    return root / "prep"


def save_teacher(path: Path, size: int) -> None:
    from hkd.models import build_model

    spec = {**PAPER_TEACHER, "img_size": size, "num_classes": len(CLASSES)}
    torch.manual_seed(0)
    model = build_model(spec)
    torch.save({"model": model.state_dict(), "method": {}, "epoch": 0, "spec": json.dumps(spec),
                "method_name": "scratch"}, path)


def batches(n_slices: int, batch: int, count: int) -> list:
    """``count`` seeded (slice indices, augmentation parameters) pairs, the same for every variant."""
    from hkd.train import augment

    gen = torch.Generator().manual_seed(0)
    return [(torch.randperm(n_slices, generator=gen)[:batch], augment.sample_params(batch, gen))
            for _ in range(count)]


def time_interleaved(runs: dict, plan: list) -> dict[str, float]:
    """Median seconds per step of each run, timing the runs in turn on the same batches.

    Round-robin timing puts every variant under the same machine load, so their ratios hold even
    when the machine's speed drifts during the benchmark. The first batch is an untimed warm-up.
    """
    times = {label: [] for label in runs}
    for i, (idx, params) in enumerate(plan):
        for label, run in runs.items():
            run.model.train()
            t0 = time.perf_counter()
            run.train_step(idx, params if run.cfg.augment != "none" else None)
            if i:
                times[label].append(time.perf_counter() - t0)
    return {label: sorted(t)[len(t) // 2] for label, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from hkd.train.teacher_cache import write_cache
    from hkd.models.checkpoint import load_model
    from hkd.train.config import TrainConfig
    from hkd.train.trainer import Run

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepared = make_data(tmp, args.size)
        teacher_ckpt = tmp / "teacher.pt"
        save_teacher(teacher_ckpt, args.size)
        teacher, _ = load_model(teacher_ckpt)
        for method, names in (("logits", ["logits"]), ("latent", ["bottleneck"])):
            write_cache(teacher, prepared, names, tmp / f"{method}.h5", device=device)
        del teacher
        runs = {}
        for label, method, cache in (("scratch", "scratch", None), ("logits, teacher online", "logits", None),
                                     ("logits, teacher cached", "logits", "logits.h5"),
                                     ("latent, teacher online", "latent", None),
                                     ("latent, teacher cached", "latent", "latent.h5")):
            cfg = TrainConfig.from_dict({"model": {"arch": "squeezeunet", "width": "0.4M"}, "method": method,
                                         "teacher": PAPER_TEACHER if method != "scratch" else None,
                                         "batch_size": args.batch, "device": device,
                                         "augment": "none" if cache else "transunet"})
            run = Run(cfg, prepared, tmp / label.replace(" ", "_"), None,
                      teacher_ckpt if method != "scratch" else None, progress=False,
                      teacher_cache=tmp / cache if cache else None)
            runs[label] = run
        seconds = time_interleaved(runs, batches(len(runs["scratch"].train_set), args.batch, args.steps + 1))
        del runs
    rows = list(seconds.items())
    base = seconds["scratch"]
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {args.threads} threads"
    print(f"device: {name}; student SqueezeUNet 0.4M, teacher TransUNet R50-ViT-B/16, {args.size}px, "
          f"batch {args.batch}, median of {args.steps} steps, variants timed in turn on the same batches")
    print(f"{'step':<26} {'s/step':>8} {'x scratch':>10}")
    for label, t in rows:
        print(f"{label:<26} {t:>8.3f} {t / base:>9.2f}x")


if __name__ == "__main__":
    main()
