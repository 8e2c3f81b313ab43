"""How far the teacher's targets a distilled run receives are from the live teacher, per feature and branch.

For each feature map of a trained teacher and each augmentation branch (unchanged, rot90 + flip,
small rotation), on the first ``--n`` training slices, prints the relative L2 error
``||received - teacher(aug(x))|| / ||teacher(aug(x))||`` of

* ``transformed cache``: the teacher's map of the un-augmented slice put through the slice's transform
  (rot90/flip on the map's grid, rotations by bilinear resampling), which is what a cache of
  un-augmented features gives an augmented run;
* ``received``: what the trainer hands the method (``Run`` with the teacher online, or with the cache
  when the run has no augmentation, the only case where the cache is allowed).

For scale it also prints the error between the maps of two unrelated slices.

    python benchmarks/teacher_targets.py --teacher results/default/models/teacher/best.pt \\
        --data results/default/data/prepared [--n 32]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

BRANCHES = ("unchanged", "rot90+flip", "rotation")


def params_for(branch: str, n: int):
    from hkd.train import augment

    p = augment.sample_params(n, torch.Generator().manual_seed(1))
    p["rot90"][:] = branch == "rot90+flip"
    p["rotate"][:] = branch == "rotation"
    return p


def transform_map(params, m: torch.Tensor) -> torch.Tensor:
    """The slice's geometric transform applied to a feature map on its own grid."""
    m = m.clone()
    for i in torch.nonzero(params["rot90"]).flatten().tolist():
        m[i] = torch.flip(torch.rot90(m[i], int(params["k"][i]), dims=(-2, -1)), dims=(-1 - int(params["flip_axis"][i]),))
    idx = torch.nonzero(params["rotate"]).flatten()
    if len(idx):
        rad = params["angle"][idx] * math.pi / 180
        theta = torch.zeros(len(idx), 2, 3)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = rad.cos(), -rad.sin(), rad.sin(), rad.cos()
        grid = F.affine_grid(theta, list(m[idx].shape), align_corners=False)
        m[idx] = F.grid_sample(m[idx], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return m


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from hkd.data.dataset import load_slices
    from hkd.train import augment
    from hkd.train.teacher_cache import write_cache
    from hkd.models import recorder_of
    from hkd.models.checkpoint import load_model
    from hkd.train.config import TrainConfig
    from hkd.train.trainer import Run

    teacher, spec = load_model(args.teacher)
    features = recorder_of(teacher, spec, "teacher")
    names = [n for n in features.names if n != "vit"]
    data = load_slices(args.data, "train")
    idx = torch.arange(min(args.n, len(data)))
    x = data.image[idx]
    with torch.no_grad():
        plain = features(x, names)
        unrelated = features(data.image[idx.flip(0)], names)
    model = {k: v for k, v in spec.items() if k not in ("num_classes", "img_size")}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache.h5"
        write_cache(teacher, spec, args.data, names, cache)
        runs = {}
        for kind, aug in (("online", "transunet"), ("cached", "none")):
            cfg = TrainConfig.from_dict({"model": model, "method": "at",  # a student with every teacher map
                                         "method_options": {"layers": names}, "teacher": model, "device": "cpu",
                                         "augment": aug})
            runs[kind] = Run(cfg, args.data, Path(tmp) / kind, None, args.teacher, progress=False,
                             teacher_cache=cache if kind == "cached" else None)
        print(f"relative L2 error against teacher(aug(x)), {len(idx)} training slices of {args.data}")
        print(f"{'feature':<11} {'branch':<11} {'transformed cache':>18} {'received':>9} {'from':>7}")
        for branch in BRANCHES:
            params = params_for(branch, len(idx))
            with torch.no_grad():
                live = features(augment.apply(params, x), names)
            run = runs["cached"] if branch == "unchanged" else runs["online"]
            received = run.teacher_features(idx, augment.apply(params, x) if run.cfg.augment != "none" else x)
            for n in names:
                old = rel(transform_map(params, plain[n]), live[n])
                print(f"{n:<11} {branch:<11} {old:>18.4f} {rel(received[n], live[n]):>9.2e} "
                      f"{'cache' if run is runs['cached'] else 'online':>7}")
        print("two unrelated slices: " + ", ".join(f"{n} {rel(unrelated[n], plain[n]):.2f}" for n in names))


if __name__ == "__main__":
    main()
