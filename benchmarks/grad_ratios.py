"""Balance of the loss terms per block of the student, and the weights that keep every block in band.

A term's ratio in a block is ``||d term / d block weights|| / ||d segmentation / d block weights||``
(blocks: :func:`hkd.models.model_blocks`; the method's adapters are left out, the segmentation
loss does not reach them). The band the defaults aim for is 0.1x to 10x. Two modes:

* ``--teacher CKPT --data PREPARED``: every registered method (or those of ``--methods``) with its default
  options (or those of ``--config``'s ``distill`` section), on ``--batches`` augmented training batches, at the student's
  initialisation and, with ``--trained CKPT`` (e.g. a scratch student's ``best.pt``), on a trained student
  standing for the student after the warm-up. Prints the ratio per block (median over the batches).
* ``--logs DIR``: from the per-block ``gradnorm_*`` columns every run writes to ``log.csv`` (runs under
  ``DIR/<method>/w<width>/s<seed>``): per block the ratio at the first and last epoch and its min and max
  after the warm-up (``distill_warmup`` of ``--config``, or ``--warmup``), mean over seeds; and the runs
  flagged for a block above 10x after the warm-up.

Both modes end with the criterion for a method's default weights. For each distillation term, the weight
option that scales it is found by doubling each option and seeing which terms double; the ratio of a term
in a block grows with that weight (divided by the segmentation loss's weight, for a method that trades the
two off). The suggested weight is the largest for which every block the term acts on stays at or below 10x
the segmentation gradient in that block after the warm-up (the trained student with ``--trained``, else the
initialisation; in ``--logs`` the largest of the runs' post-warm-up medians); the blocks left below 0.1x at
that weight are named.

Why per block: feature terms act on a few blocks by design (an attention term on the encoder stages it
compares, a latent term on the encoder and bottleneck, none of them on the decoder or head). The blocks a
term does not reach have ratio 0, which is not an imbalance; a whole-model ratio averages them in and reads
low (0.12x) while the blocks the term does reach are at 6x-339x, and under AdamW each parameter follows its
own gradient, so a block dominated by a term follows that term. The criterion therefore bounds the ratio in
every block the term reaches, and ignores the others.

    python benchmarks/grad_ratios.py --teacher results/default/models/teacher/best.pt \\
        --data results/default/data/prepared --trained results/default/models/students/scratch/w0.4M/s0/best.pt
    python benchmarks/grad_ratios.py --logs results/default/models/students
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import pandas as pd
import torch
import yaml

from hkd.train import gradient_balance as gb

REPO = Path(__file__).resolve().parents[1]
BAND = gb.BAND


# --- the criterion ----------------------------------------------------------------------------------

def _method(name: str, options: dict, tspecs, sspecs, classes: int, seed: int = 0):
    from hkd import distill

    torch.manual_seed(seed)  # adapters drawn alike for every build
    return distill.build(name, tspecs, sspecs, classes, **options)


def _random_inputs(method, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    maps = {side: {n: torch.randn(2, *method.feature(side, n).shape, generator=gen)
                   for n in names} for side, names in (("teacher", method.teacher_features),
                                                       ("student", method.student_features))}
    logits = method.specs["student"].get("logits")
    size = (logits.height, logits.width) if logits else (8, 8)
    target = torch.randint(0, method.num_classes, (2, *size), generator=gen)
    return maps["teacher"], maps["student"], target


def weight_options(name: str, options: dict, tspecs, sspecs, classes: int) -> dict[str, str]:
    """term -> the option that scales it linearly (the term doubles when the option does)."""
    base = _method(name, options, tspecs, sspecs, classes)
    teacher, student, target = _random_inputs(base)
    with torch.no_grad():
        ref = {k: float(v) for k, v in base(teacher, student, target).items()}
        found = {}
        for opt, value in base.options.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                continue
            factor = 2.0
            try:
                changed = _method(name, {**options, opt: factor * value}, tspecs, sspecs, classes)
            except ValueError:  # twice is out of the option's range (alpha 0.6 -> 1.2): half of it
                factor = 0.5
                changed = _method(name, {**options, opt: factor * value}, tspecs, sspecs, classes)
            got = {k: float(v) for k, v in changed(teacher, student, target).items()}
            for term, v in got.items():
                if ref[term] != 0 and abs(v / ref[term] - factor) < 1e-5:
                    found[term] = opt
    return found


def suggest(name: str, options: dict, ratios: dict[str, dict[str, float]], tspecs, sspecs, classes: int) -> list[str]:
    """Lines of the criterion for one method: ``ratios`` is term -> student block -> ratio at ``options``."""
    base = _method(name, options, tspecs, sspecs, classes)
    scaled_by = weight_options(name, options, tspecs, sspecs, classes)
    lines = []
    for term, by_block in ratios.items():
        reached = {b: r for b, r in by_block.items() if r > 0}
        opt = scaled_by.get(term)
        if not reached or opt is None:
            lines.append(f"{name:<8} {term:<11} no weight option scales this term" if opt is None
                         else f"{name:<8} {term:<11} reaches no block")
            continue
        w0 = float(base.options[opt])
        raw = {b: r * base.segmentation_weight / w0 for b, r in reached.items()}  # the ratio at weight 1

        def ratio_at(w: float, block: str) -> float:
            return raw[block] * w / _method(name, {**options, opt: w}, tspecs, sspecs, classes).segmentation_weight

        worst = max(raw, key=raw.get)
        lo, hi = 0.0, w0
        while ratio_at(hi, worst) <= BAND[1]:  # ratio grows with the weight: bracket, then bisect
            try:
                _method(name, {**options, opt: 2 * hi}, tspecs, sspecs, classes)
            except ValueError:
                break
            lo, hi = hi, 2 * hi
        if ratio_at(hi, worst) <= BAND[1]:
            best = hi
        else:
            for _ in range(40):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if ratio_at(mid, worst) <= BAND[1] else (lo, mid)
            best = lo
        low = {b: ratio_at(best, b) for b in reached} if best > 0 else {}
        below = [f"{b} {r:.2g}x" for b, r in low.items() if r < BAND[0]]
        unreached = sorted(set(by_block) - set(reached), key=list(by_block).index)
        lines.append(f"{name:<8} {term:<11} {opt}={w0:g} now; largest in band: {opt}={best:.3g} "
                     f"(bound by {worst}); below {BAND[0]:g}x there: {', '.join(below) or 'none'}; "
                     f"not reached: {', '.join(unreached) or 'none'}")
    return lines


# --- from the logs -----------------------------------------------------------------------------------

def _config(path: Path | None) -> dict:
    return yaml.safe_load(Path(path).read_text()) if path else {}


def _warmup(cfg: dict) -> float:
    train = {**(cfg.get("train") or {}), **((cfg.get("students") or {}).get("train") or {})}
    return float(train.get("distill_warmup", 0.0))


def from_logs(args) -> None:
    from hkd.models import build_model, recorder_of

    cfg = _config(args.config)
    warmup = args.warmup if args.warmup is not None else _warmup(cfg)
    rows, medians, specs = [], {}, {}
    for log_path in sorted(args.logs.glob("*/w*/s*/log.csv")):
        method, width, seed = log_path.parts[-4], log_path.parts[-3][1:], log_path.parts[-2][1:]
        log = pd.read_csv(log_path)
        ratios = gb.block_ratios(log)
        if ratios.empty:
            continue
        metrics = json.loads((log_path.parent / "metrics.json").read_text())
        specs[method] = metrics["model"]
        late = gb.after_warmup(ratios, warmup)
        for (term, block), g in ratios.groupby(["term", "block"], sort=False):
            after = late[(late["term"] == term) & (late["block"] == block)]["ratio"]
            rows.append({"method": method, "width": width, "seed": seed, "term": term, "block": block,
                         "first": g["ratio"].iloc[0], "last": g["ratio"].iloc[-1],
                         "min after warm-up": after.min(), "max after warm-up": after.max()})
        for r in gb.post_warmup_medians(log, warmup).itertuples():
            key = (method, r.term)
            medians.setdefault(key, {})
            medians[key][r.block] = max(medians[key].get(r.block, 0.0), r.median)
        flags = gb.flags(log, warmup)
        if flags:
            print(f"flagged {method} w{width} s{seed}: {'; '.join(flags)}")
    if not rows:
        raise SystemExit(f"no log.csv with gradnorm_* columns under {args.logs}")
    table = (pd.DataFrame(rows).groupby(["method", "width", "term", "block"], sort=False)
             [["first", "last", "min after warm-up", "max after warm-up"]].mean().reset_index())
    print(f"gradient ratio (term / segmentation) per block of the student, from the logs under {args.logs}, "
          f"mean over seeds; warm-up {warmup:g} epochs ('model': the whole student)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    teacher_metrics = args.logs.parent / "teacher" / "metrics.json"
    if not teacher_metrics.exists():
        print(f"\n(no {teacher_metrics}: the criterion needs the teacher's spec, skipped)")
        return
    tspec = json.loads(teacher_metrics.read_text())["model"]
    size = int(tspec["img_size"])
    tspecs = recorder_of(build_model(tspec), tspec, "teacher").describe(size)
    print(f"\ncriterion: largest weight with every reached block <= {BAND[1]:g}x after the warm-up "
          "(largest post-warm-up median over the runs)")
    for method in dict.fromkeys(m for m, _ in medians):
        sspecs = recorder_of(build_model(specs[method]), specs[method], "student").describe(size)
        options = (cfg.get("distill") or {}).get(method, {})
        terms = {t: b for (m, t), b in medians.items() if m == method}
        for line in suggest(method, options, terms, tspecs, sspecs, int(tspec["num_classes"])):
            print(line)


# --- measured on batches -----------------------------------------------------------------------------

def measure(args) -> None:
    from hkd import distill
    from hkd.models import model_blocks
    from hkd.models.checkpoint import load_model, load_state
    from hkd.train import augment
    from hkd.train.config import TrainConfig
    from hkd.train.trainer import Run

    options = _config(args.config).get("distill") or {}
    _, spec = load_model(args.teacher)
    teacher = {k: v for k, v in spec.items() if k not in ("num_classes", "img_size")}
    trained = load_state(args.trained)["model"] if args.trained else None
    state_used = "trained" if trained is not None else "init"
    print(f"gradient ratio (term / segmentation) per block of the student, median over {args.batches} batches "
          f"of {args.batch}, student width {args.width} ('model': the whole student)")
    print(f"{'method':<8} {'term':<11} {'block':<11} {'at init':>9} {'trained':>9}")
    criterion = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods or [m for m in distill.available() if m != "scratch"]:
            cfg = TrainConfig.from_dict({"model": {"arch": "squeezeunet", "width": args.width}, "method": method,
                                         "method_options": options.get(method, {}), "teacher": teacher,
                                         "device": "cpu", "seed": 0})
            run = Run(cfg, args.data, Path(tmp) / method, None, args.teacher, progress=False)
            gen = torch.Generator().manual_seed(0)
            plan = [(torch.randperm(len(run.train_set), generator=gen)[:args.batch],
                     augment.sample_params(args.batch, gen)) for _ in range(args.batches)]
            blocks = ["model", *list(model_blocks(run.model, run.spec))]
            ratios: dict[tuple[str, str, str], list[float]] = {}
            for state in ("init", "trained"):
                if state == "trained":
                    if trained is None:
                        break
                    run.model.load_state_dict(trained)
                run.model.train()
                for idx, aug in plan:
                    x, y = run.train_set.image[idx], run.train_set.label[idx]
                    seg, dist = run._step_losses(x, y, idx, aug)
                    norms = run.probe.norms(seg, dist)
                    for term in dist:
                        for block in blocks:
                            b = None if block == "model" else block
                            s = norms[gb.column(gb.SEG, b)]
                            ratios.setdefault((term, block, state), []).append(
                                norms[gb.column(term, b)] / s if s > 0 else float("nan"))
            med = {k: statistics.median(v) for k, v in ratios.items()}
            for term in dict.fromkeys(t for t, _, _ in ratios):
                for block in blocks:
                    done = med.get((term, block, "trained"), float("nan"))
                    print(f"{method:<8} {term:<11} {block:<11} {med[(term, block, 'init')]:>9.3g} {done:>9.3g}")
            terms = {t: {b: med[(t, b, state_used)] for b in blocks[1:]} for t in dict.fromkeys(t for t, _, _ in ratios)}
            criterion += suggest(method, options.get(method, {}), terms, run.method.specs["teacher"],
                                 run.method.specs["student"], len(run.classes))
    print(f"\ncriterion: largest weight with every reached block <= {BAND[1]:g}x, on the "
          f"{'trained student (--trained)' if trained is not None else 'student at initialisation (no --trained)'}")
    print("\n".join(criterion))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", type=Path, default=None, help="folder of student runs (<method>/w<width>/s<seed>)")
    ap.add_argument("--teacher", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--trained", type=Path, default=None, help="a trained student checkpoint of --width")
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml",
                    help="config whose distill options (and, for --logs, distill_warmup) to use")
    ap.add_argument("--warmup", type=float, default=None, help="--logs: warm-up epochs (default: the config's)")
    ap.add_argument("--methods", nargs="+", default=None,
                    help="--teacher mode: only these methods (default: every registered method but scratch)")
    ap.add_argument("--width", default="0.4M")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.logs:
        from_logs(args)
    elif args.teacher and args.data:
        measure(args)
    else:
        ap.error("give --logs DIR, or --teacher and --data")


if __name__ == "__main__":
    main()
