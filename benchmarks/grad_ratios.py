"""Balance of the loss terms per block of the student, and the default weights that balance them.

A term's ratio in a block is ``||d term / d block weights|| / ||d segmentation / d block weights||``
(blocks: :func:`hkd.models.model_blocks`; the method's adapters are left out, the segmentation
loss does not reach them). Two modes:

* ``--teacher CKPT --data PREPARED``: every registered method (or those of ``--methods``) with its default
  options (or those of ``--config``'s ``distill`` section), on ``--batches`` augmented training batches, at the
  student's initialisation and, with ``--trained CKPT`` (e.g. a scratch student's ``best.pt``), on a trained
  student standing for the student after the warm-up (the method's adapters as built). Prints the ratio per
  block (median over the batches). ``--width`` and ``--trained`` take one or more widths and checkpoints,
  paired in order.
* ``--logs DIR``: from the per-block ``gradnorm_*`` columns every run writes to ``log.csv`` (runs under
  ``DIR/<method>/w<width>/s<seed>``): per block the ratio at the first and last epoch and its min and max
  after the warm-up (``distill_warmup`` of ``--config``, or ``--warmup``), mean over seeds; and the runs
  flagged for a block above 10x after the warm-up.

Both modes end with the balance rule for a method's default weights, the same for every method. For each
distillation term, the weight option that scales it is found by doubling each option and seeing which terms
double; the ratio of a term in a block grows with that weight (divided by the segmentation loss's weight,
for a method that trades the two off). At each width, the *balance weight* puts the median of the term's
ratios over the blocks it reaches at 1x, and the *cap* is the largest weight at which no such block exceeds
10x (the trained student with ``--trained``, else the initialisation; in ``--logs`` each block's
post-warm-up median: the median over the seeds for the balance, the highest seed's for the cap, so that
no run passes 10x). The suggested weight is the geometric mean of the widths'
balance weights, lowered to the smallest cap, rounded to 2 significant figures (:func:`balance`); a weight
whose median already lies within 0.5x-2x at every width, with no block above 10x, is kept (the medians of
one weight vary 2-3x between seeds); so is a weight held by the cap whose highest block lies within
5x-10x (the highest block of one weight varies between seeds too: 7x and 12x for ``relrep``
at 22). The defaults take the rule from the runs' own logs after the warm-up
(``--logs``, with ``--config`` holding the weights the runs used): a trained scratch student (``--trained``)
stands in poorly for a distilled one on the terms that act on the logits (it reads 23x-36x for ``logits`` at
alpha 0.1, whose runs log 0.64x).

Why per block: feature terms act on a few blocks by design (an attention term on the encoder stages it
compares, a latent term on the encoder and bottleneck, none of them on the decoder or head). The blocks a
term does not reach have ratio 0, which is not an imbalance; a whole-model ratio averages them in and reads
low (0.12x) while the blocks the term does reach are at 6x-339x, and under AdamW each parameter follows its
own gradient, so a block dominated by a term follows that term. The rule therefore looks only at the blocks
the term reaches: their median at 1x (the term as strong as the segmentation loss in a typical block), and
none above 10x.

    python benchmarks/grad_ratios.py --teacher results/default/models/teacher/best.pt \\
        --data results/default/data/prepared --width 0.4M 1.5 \\
        --trained results/default/models/students/scratch/w0.4M/s0/best.pt \\
                  results/default/models/students/scratch/w1.5/s0/best.pt
    python benchmarks/grad_ratios.py --logs results/default/models/students
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

import pandas as pd
import torch
import yaml

from hkd.train import gradient_balance as gb

REPO = Path(__file__).resolve().parents[1]
BAND = gb.BAND
TARGET = 1.0  # the median ratio over the blocks a term reaches, at the balance weight
CAP = BAND[1]  # no block above this
# A weight whose median ratio lies in this band at every width is kept: the medians of one weight vary 2-3x
# between seeds, so a nearer target would chase noise.
NEAR = (0.5, 2.0)


# --- the rule --------------------------------------------------------------------------------------

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
                try:
                    changed = _method(name, {**options, opt: factor * value}, tspecs, sspecs, classes)
                except ValueError:  # not a weight (a count takes whole numbers only)
                    continue
            got = {k: float(v) for k, v in changed(teacher, student, target).items()}
            for term, v in got.items():
                if ref[term] != 0 and abs(v / ref[term] - factor) < 1e-5:
                    found[term] = opt
    return found


def _valid(name: str, options: dict, opt: str, w: float, tspecs, sspecs, classes: int):
    """The method built with option ``opt`` at ``w``, or None where ``w`` is out of the option's range."""
    try:
        return _method(name, {**options, opt: w}, tspecs, sspecs, classes)
    except ValueError:
        return None


def _weight_at(level: float, gain, start: float, valid) -> float:
    """The weight ``w`` at which ``gain(w)`` (increasing in ``w``) reaches ``level``: bracketed from ``start``
    by halving and doubling (or going half-way to the option's upper limit), then bisected."""
    lo = hi = start
    while gain(lo) > level and lo > 1e-12:
        lo /= 2
    while gain(hi) < level:
        step = hi
        while step > hi * 1e-12 and not valid(hi + step):
            step /= 2
        if step <= hi * 1e-12:
            return hi  # the option's limit: the level is out of reach
        lo, hi = hi, hi + step
    for _ in range(60):
        mid = (lo * hi) ** 0.5 if lo > 0 else hi / 2
        lo, hi = (mid, hi) if gain(mid) < level else (lo, mid)
    return (lo + hi) / 2


def round_down_to(value: float, cap: float, digits: int = 2) -> float:
    """``value`` rounded to ``digits`` significant figures, rounded down instead where rounding would exceed
    ``cap``."""
    if value <= 0:
        return value
    scale = 10 ** (math.floor(math.log10(value)) - digits + 1)
    rounded = round(value / scale) * scale
    if rounded > cap:
        rounded = math.floor(value / scale) * scale
    return float(f"{rounded:.{digits}g}")


def balance(name: str, options: dict, ratios: dict[str, dict[str, dict[str, float]]], tspecs, sspecs,
            classes: int, peaks: dict[str, dict[str, dict[str, float]]] | None = None) -> list[dict]:
    """The balance rule for one method, per term: ``ratios`` is term -> width -> student block -> the ratio
    measured at ``options``; ``peaks``, shaped alike, the highest of the runs behind each ratio (the cap holds
    for every run; default: ``ratios``).

    At each width the term's ratio in every block it reaches (ratio > 0) grows with the weight option that
    scales it (over the segmentation loss's weight, for a method that trades the two off). The balance
    weight is the one at which the median of those ratios is :data:`TARGET` (1x); the cap is the largest
    weight at which none exceeds :data:`CAP` (10x). Widths combine by the geometric mean of their balance
    weights, capped at every width's cap; the result is rounded to 2 significant figures (down, where
    rounding up would pass the cap). The weight of ``options`` is kept where no block passes the cap and
    either every width's median lies in :data:`NEAR` or, held by the cap (the balance weight is above it),
    its highest block lies within ``NEAR[0]`` of the cap.
    """
    base = _method(name, options, tspecs, sspecs, classes)
    scaled_by = weight_options(name, options, tspecs, sspecs, classes)
    rows = []
    for term, widths in ratios.items():
        opt = scaled_by.get(term)
        reached = {w: {b: r for b, r in by_block.items() if r > 0} for w, by_block in widths.items()}
        if opt is None or not all(reached.values()):
            rows.append({"method": name, "term": term, "option": opt,
                         "problem": "no weight option scales this term" if opt is None else "reaches no block"})
            continue
        w0 = float(base.options[opt])

        def gain(w: float, opt: str = opt) -> float:  # the ratio's factor at weight w: w / segmentation weight
            built = _valid(name, options, opt, w, tspecs, sspecs, classes)
            return w / built.segmentation_weight if built is not None else math.inf

        def valid(w: float, opt: str = opt) -> bool:
            return _valid(name, options, opt, w, tspecs, sspecs, classes) is not None

        top = {w: {b: (peaks or ratios)[term][w][b] for b in by_block} for w, by_block in reached.items()}
        unit = {w: {b: r / gain(w0) for b, r in by_block.items()} for w, by_block in reached.items()}
        per_width = {}
        for width, raw in unit.items():
            per_width[width] = {
                "balance": _weight_at(TARGET / statistics.median(raw.values()), gain, w0, valid),
                "cap": _weight_at(CAP * gain(w0) / max(top[width].values()), gain, w0, valid)}
        combined = math.exp(statistics.fmean(math.log(v["balance"]) for v in per_width.values()))
        cap = min(v["cap"] for v in per_width.values())
        under_cap = all(max(top[w].values()) <= CAP for w in reached)
        balanced = all(NEAR[0] <= statistics.median(reached[w].values()) <= NEAR[1] for w in reached)
        held = cap < combined  # the cap decides: no weight brings the median to 1x without passing 10x
        near_cap = max(max(top[w].values()) for w in reached) >= NEAR[0] * CAP
        kept = under_cap and (balanced or (held and near_cap))
        chosen = w0 if kept else round_down_to(min(combined, cap), cap)
        at = {}
        for width, raw in unit.items():
            now = {b: r * gain(chosen) for b, r in raw.items()}
            worst = max(now, key=now.get)
            measured = reached[width]
            at[width] = {"median": statistics.median(now.values()), "max": now[worst], "max_block": worst,
                         "run_median": statistics.median(measured.values()), "run_max": max(measured.values()),
                         "run_peak": max(top[width].values()),
                         "below": [b for b, r in now.items() if r < BAND[0]],
                         "not_reached": [b for b in widths[width] if b not in raw], **per_width[width]}
        rows.append({"method": name, "term": term, "option": opt, "old": w0, "new": chosen, "kept": kept,
                     "balanced": balanced, "capped": not kept and held, "widths": at})
    return rows


def balance_lines(rows: list[dict]) -> list[str]:
    """The rule's outcome, one line per term and width."""
    lines = []
    for r in rows:
        if "problem" in r:
            lines.append(f"{r['method']:<8} {r['term']:<11} {r['problem']}")
            continue
        lines.append(f"{r['method']:<8} {r['term']:<11} {r['option']}={r['old']:g} now -> {r['option']}={r['new']:g}"
                     + (" (capped)" if r["capped"] else "")
                     + (f" (kept: every width's median within {NEAR[0]:g}x-{NEAR[1]:g}x)" if r.get("kept") and r["balanced"]
                        else f" (kept: held by the cap, highest block within {NEAR[0] * CAP:g}x-{CAP:g}x)" if r.get("kept")
                        else ""))
        for width, a in r["widths"].items():
            lines.append(f"{'':<8} {'':<11}   width {width}: at {r['old']:g} median {a['run_median']:.3g}x, max "
                         f"{a['run_max']:.3g}x; balance {a['balance']:.3g}, cap {a['cap']:.3g}; at "
                         f"{r['new']:g}: median {a['median']:.3g}x, max {a['max']:.3g}x ({a['max_block']}); below "
                         f"{BAND[0]:g}x: {', '.join(a['below']) or 'none'}; not reached: "
                         f"{', '.join(a['not_reached']) or 'none'}")
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
            medians.setdefault((method, r.term), {}).setdefault(width, {}).setdefault(r.block, []).append(r.median)
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
    print(f"\nbalance rule: median over the reached blocks {TARGET:g}x, none above {CAP:g}x, after the warm-up "
          "(each block's post-warm-up median: median over the seeds for the balance, highest seed for the cap)")
    rows = []
    for method in dict.fromkeys(m for m, _ in medians):
        sspecs = recorder_of(build_model(specs[method]), specs[method], "student").describe(size)
        options = (cfg.get("distill") or {}).get(method, {})
        terms = {t: {w: {b: statistics.median(v) for b, v in blocks.items()} for w, blocks in widths.items()}
                 for (m, t), widths in medians.items() if m == method}
        peaks = {t: {w: {b: max(v) for b, v in blocks.items()} for w, blocks in widths.items()}
                 for (m, t), widths in medians.items() if m == method}
        rows += balance(method, options, terms, tspecs, sspecs, int(tspec["num_classes"]), peaks)
    print("\n".join(balance_lines(rows)))
    _write_json(args.json, {"source": str(args.logs), "rule": rows})


def _write_json(path: Path | None, payload: dict) -> None:
    if path is not None:
        Path(path).write_text(json.dumps(payload, indent=1))
        print(f"\nwritten: {path}")


# --- measured on batches -----------------------------------------------------------------------------

def _width(text: str) -> float | str:
    """A ``--width`` as the model spec takes it: a multiplier (``1.5``) or a parameter budget (``0.4M``)."""
    try:
        return float(text)
    except ValueError:
        return text


def _trained_states(args) -> list:
    """The ``--trained`` checkpoints' student weights, one per ``--width`` (None for each without)."""
    from hkd.models.checkpoint import load_state

    if not args.trained:
        return [None] * len(args.width)
    if len(args.trained) != len(args.width):
        raise SystemExit(f"--trained: {len(args.trained)} checkpoint(s) for {len(args.width)} width(s) of --width; "
                         "give one per width, in the same order")
    states = []
    for path, width in zip(args.trained, args.width):
        state = load_state(path)
        spec = json.loads(state["spec"]) if isinstance(state.get("spec"), str) else state.get("spec") or {}
        if str(spec.get("width")) != str(width):
            raise SystemExit(f"{path}: a student of width {spec.get('width')}, given for --width {width}")
        states.append(state["model"])
    return states


def measure(args) -> None:
    from hkd import distill
    from hkd.models import model_blocks
    from hkd.models.checkpoint import load_model
    from hkd.train import augment
    from hkd.train.config import TrainConfig
    from hkd.train.trainer import Run

    options = _config(args.config).get("distill") or {}
    _, spec = load_model(args.teacher)
    teacher = {k: v for k, v in spec.items() if k not in ("num_classes", "img_size")}
    trained = _trained_states(args)
    state_used = "trained" if trained[0] is not None else "init"
    print(f"gradient ratio (term / segmentation) per block of the student, median over {args.batches} batches "
          f"of {args.batch} ('model': the whole student)")
    print(f"{'method':<8} {'width':<6} {'term':<11} {'block':<11} {'at init':>9} {'trained':>9}")
    rows, measured = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods or [m for m in distill.available() if m != "scratch"]:
            terms: dict[str, dict[str, dict[str, float]]] = {}
            for width, state_dict in zip(args.width, trained):
                cfg = TrainConfig.from_dict({"model": {"arch": "squeezeunet", "width": _width(width)}, "method": method,
                                             "method_options": options.get(method, {}), "teacher": teacher,
                                             "device": "cpu", "seed": 0})
                run = Run(cfg, args.data, Path(tmp) / method / str(width), None, args.teacher, progress=False)
                gen = torch.Generator().manual_seed(0)
                plan = [(torch.randperm(len(run.train_set), generator=gen)[:args.batch],
                         augment.sample_params(args.batch, gen)) for _ in range(args.batches)]
                blocks = ["model", *list(model_blocks(run.model, run.spec))]
                ratios: dict[tuple[str, str, str], list[float]] = {}
                for state in ("init", "trained"):
                    if state == "trained":
                        if state_dict is None:
                            break
                        run.model.load_state_dict(state_dict)
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
                        print(f"{method:<8} {width:<6} {term:<11} {block:<11} {med[(term, block, 'init')]:>9.3g} "
                              f"{done:>9.3g}", flush=True)
                    terms.setdefault(term, {})[str(width)] = {b: med[(term, b, state_used)] for b in blocks[1:]}
            measured[method] = terms
            rows += balance(method, options.get(method, {}), terms, run.method.specs["teacher"],
                            run.method.specs["student"], len(run.classes))
    print(f"\nbalance rule: median over the reached blocks {TARGET:g}x, none above {CAP:g}x, on the "
          f"{'trained student (--trained)' if state_used == 'trained' else 'student at initialisation (no --trained)'}")
    print("\n".join(balance_lines(rows)))
    _write_json(args.json, {"teacher": str(args.teacher), "trained": [str(t) for t in args.trained or []],
                            "widths": [str(w) for w in args.width], "state": state_used, "ratios": measured,
                            "rule": rows})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", type=Path, default=None, help="folder of student runs (<method>/w<width>/s<seed>)")
    ap.add_argument("--teacher", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--trained", type=Path, nargs="+", default=None,
                    help="trained student checkpoints, one per --width, in the same order")
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml",
                    help="config whose distill options (and, for --logs, distill_warmup) to use")
    ap.add_argument("--warmup", type=float, default=None, help="--logs: warm-up epochs (default: the config's)")
    ap.add_argument("--methods", nargs="+", default=None,
                    help="--teacher mode: only these methods (default: every registered method but scratch)")
    ap.add_argument("--width", nargs="+", default=["0.4M"], help="student widths (the rule combines them)")
    ap.add_argument("--json", type=Path, default=None, help="also write the ratios and the rule's outcome here")
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
