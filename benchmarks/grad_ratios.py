"""Balance of the loss terms: gradient norm of each distillation term over the segmentation loss's.

Two modes, both printing ``||d term / d student weights|| / ||d segmentation / d student weights||``
per method and term (the band the defaults aim for is 0.1x to 10x):

* ``--teacher CKPT --data PREPARED``: for every registered method with its default options (or those
  of ``--config``'s ``distill`` section), on ``--batches`` augmented training batches, at the student's
  initialisation and, with ``--trained CKPT`` (e.g. a scratch student's ``best.pt``), on a trained
  student. Use it to choose a method's weights.
* ``--logs DIR``: from the ``gradnorm_*`` columns every run writes to ``log.csv``: first and last epoch,
  mean over the runs (seeds) of each method and width found under DIR.

    python benchmarks/grad_ratios.py --teacher results/default/models/teacher/best.pt \\
        --data results/default/data/prepared --trained results/default/models/students/scratch/w0.4M/s0/best.pt
    python benchmarks/grad_ratios.py --logs results/default/models/students
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch


def from_logs(root: Path) -> None:
    import pandas as pd

    rows = []
    for log in sorted(root.glob("*/w*/s*/log.csv")):
        method, width = log.parts[-4], log.parts[-3][1:]
        df = pd.read_csv(log)
        for col in [c for c in df.columns if c.startswith("gradnorm_") and c != "gradnorm_seg"]:
            ratio = df[col] / df["gradnorm_seg"]
            rows.append({"method": method, "width": width, "term": col[len("gradnorm_"):],
                         "first epoch": ratio.iloc[0], "last epoch": ratio.iloc[-1],
                         "min": ratio.min(), "max": ratio.max()})
    if not rows:
        raise SystemExit(f"no log.csv with gradnorm_* columns under {root}")
    table = pd.DataFrame(rows).groupby(["method", "width", "term"]).mean().reset_index()
    print(f"gradient ratio (term / segmentation) from the logs under {root}, mean over seeds")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


def measure(args) -> None:
    import yaml

    from hkd import distill
    from hkd.train import augment
    from hkd.train.trainer import Run, TrainConfig, load_model, load_state

    options = yaml.safe_load(args.config.read_text()).get("distill", {}) if args.config else {}
    _, spec = load_model(args.teacher)
    teacher = {k: v for k, v in spec.items() if k not in ("num_classes", "img_size")}
    trained = load_state(args.trained)["model"] if args.trained else None
    print(f"gradient ratio (term / segmentation), median over {args.batches} batches of {args.batch}, "
          f"student width {args.width}")
    print(f"{'method':<8} {'term':<11} {'at init':>9} {'trained':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for method in [m for m in distill.available() if m != "scratch"]:
            cfg = TrainConfig.from_dict({"model": {"arch": "squeezeunet", "width": args.width}, "method": method,
                                         "method_options": options.get(method, {}), "teacher": teacher,
                                         "device": "cpu", "seed": 0})
            run = Run(cfg, args.data, Path(tmp) / method, None, args.teacher, progress=False)
            gen = torch.Generator().manual_seed(0)
            plan = [(torch.randperm(len(run.train_set), generator=gen)[:args.batch],
                     augment.sample_params(args.batch, gen)) for _ in range(args.batches)]
            ratios = {}
            for state in ("init", "trained"):
                if state == "trained":
                    if trained is None:
                        break
                    run.model.load_state_dict(trained)
                run.model.train()
                for idx, aug in plan:
                    x, y = run.train_set.image[idx], run.train_set.label[idx]
                    seg, dist = run._step_losses(x, y, idx, aug)
                    norms = run.gradient_norms(seg, dist)
                    for term in dist:
                        ratios.setdefault((term, state), []).append(norms[f"gradnorm_{term}"] / norms["gradnorm_seg"])
            for term in dict.fromkeys(t for t, _ in ratios):
                init = statistics.median(ratios[(term, "init")])
                done = statistics.median(ratios[(term, "trained")]) if (term, "trained") in ratios else float("nan")
                print(f"{method:<8} {term:<11} {init:>9.3g} {done:>9.3g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", type=Path, default=None, help="folder of student runs (<method>/w<width>/s<seed>)")
    ap.add_argument("--teacher", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--trained", type=Path, default=None, help="a trained student checkpoint of --width")
    ap.add_argument("--config", type=Path, default=None, help="config file whose distill options to use")
    ap.add_argument("--width", default="0.4M")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.logs:
        from_logs(args.logs)
    elif args.teacher and args.data:
        measure(args)
    else:
        ap.error("give --logs DIR, or --teacher and --data")


if __name__ == "__main__":
    main()
