"""Deployment commands: segment new scans, export a model, measure what each model costs.

Each command is ``parser_<name>`` (its arguments) and ``cmd_<name>`` (what it does); the modules
they use are imported inside them, so a command runs only its own code (``hkd/workflow_deps.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from hkd.commands.args import json_object
from hkd.errors import DataError

log = logging.getLogger("hkd")


def _preprocessing_arg(value: str | None) -> dict | None:
    return None if value is None else json_object(value, "--preprocessing")


def _threads(n: int) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _allow_module_arg(p) -> None:
    p.add_argument("--allow-module", action="append", default=[], metavar="MODULE",
                   help="let a model of arch 'module' import MODULE (a checkpoint never makes hkd import a module "
                        "you did not name)")


def _allow(args) -> None:
    from hkd.trust import allow_modules

    allow_modules(args.allow_module)


def parser_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment CT scans (NIfTI) with a trained model: a uint8 label volume on each "
                       "scan's own grid, and each class's volume")
    p.add_argument("--model", required=True, type=Path,
                   help="a checkpoint the study wrote (best.pt of the teacher or a student) or an ONNX file from "
                        "hkd export")
    p.add_argument("--input", required=True, type=Path, help="a .nii/.nii.gz scan, or a folder of them")
    p.add_argument("--out", required=True, type=Path,
                   help="the segmentation (.nii.gz or .nii) for one scan; a folder for a folder (CASE.nii.gz). "
                        "Beside each: CASE.json, each class's voxel count and volume in mm^3")
    p.add_argument("--upsample", default="probabilities", choices=["probabilities", "nearest"],
                   help="back to the scan's grid: resize the class probabilities and arg-max there (default), or "
                        "resize the label map by nearest neighbour as hkd evaluate does")
    p.add_argument("--tta", action="store_true", help="average over the slices' mirror images (4 passes)")
    p.add_argument("--probabilities", action="store_true",
                   help="also write CASE_probabilities.npz: float16 (classes, *scan shape) in the scan's voxel order")
    p.add_argument("--classes", default=None,
                   help="comma-separated class names the model must segment (refused when they differ)")
    p.add_argument("--preprocessing", default=None,
                   help="for a checkpoint written before checkpoints recorded it: the prepared data's dataset.json, "
                        "or inline JSON with image_size, hu_window, scale, classes")
    p.add_argument("--batch-size", type=int, default=None,
                   help="slices per step (default: hkd.deploy.predict.BATCH, 4; more hold more of the network's "
                        "activations at once)")
    p.add_argument("--runtime", default=None, choices=["pytorch", "onnxruntime", "openvino"],
                   help="a checkpoint runs in pytorch; an ONNX file in onnxruntime (default) or openvino (the "
                        "openvino extra)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: reduced precision in pytorch or openvino, where the CPU has bf16 arithmetic (hkd cost "
                        "measures its Dice change); an int8 ONNX file runs as it was quantised")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default 0: every core)")
    p.add_argument("--quiet", action="store_true")
    _allow_module_arg(p)
    p.set_defaults(func=cmd_predict, inputs=("model", "input", "preprocessing"), outputs=("out",),
                   minimums={"batch_size": 1, "threads": 0})


def cmd_predict(args) -> None:
    from hkd.infer import runtime
    from hkd.deploy.predict import check_classes, predict

    _allow(args)
    _threads(args.threads)
    model = runtime.load(args.model, _preprocessing_arg(args.preprocessing), threads=args.threads,
                         runtime=args.runtime, precision=args.precision)
    if args.precision != "fp32":
        log.warning("--precision %s: reduced precision, a deliberate choice; hkd cost --data measures its test Dice "
                    "change and arg-max agreement against fp32", args.precision)
    check_classes(model, None if args.classes is None else [c.strip() for c in args.classes.split(",")])
    options = {} if args.batch_size is None else {"batch_size": args.batch_size}
    done, failed = predict(model, args.input, args.out, progress=not args.quiet, upsample=args.upsample,
                           tta=args.tta, probabilities=args.probabilities, inputs=args.input_paths, **options)
    for stats in done:
        organs = ", ".join(f"{name} {c['volume_mm3'] / 1000:.1f} ml" for name, c in stats["classes"].items())
        log.info("%s -> %s: %s", stats["input"], stats["segmentation"], organs)
    if failed:
        raise DataError(f"{len(failed)} of {len(failed) + len(done)} case(s) failed and were skipped: "
                        + "; ".join(f"{path}: {message}" for path, message in failed)
                        + f" ({len(done)} written to {args.out})")


def parser_export(sub) -> None:
    p = sub.add_parser("export", help="export a trained network alone as ONNX, checked against ONNX Runtime on real "
                       "prepared slices; --int8 quantises it")
    p.add_argument("--model", required=True, type=Path, nargs="+",
                   help="a checkpoint the study wrote (best.pt); given several, the one whose run (metrics.json "
                        "beside it) has the best validation Dice")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--data", type=Path, default=None,
                   help="the prepared dataset it was trained on: its test slices check the export, its training "
                        "slices calibrate --int8 (needed there); without it the check runs on a generated phantom "
                        "case prepared as the checkpoint records")
    p.add_argument("--out", required=True, type=Path, help="the .onnx file")
    p.add_argument("--int8", action="store_true",
                   help="static int8 quantisation (per-channel weights) calibrated on training slices; its Dice "
                        "change and latency are reported")
    p.add_argument("--int8-dice-loss", type=float, default=None,
                   help="the largest mean Dice loss of --int8 against fp32 (default 0.005): it chooses the layers "
                        "kept in float on the validation cases, and no int8 model losing more on the test cases is "
                        "written")
    p.add_argument("--calibration-slices", type=int, default=None,
                   help="training slices that calibrate --int8 (a seeded draw; default 64)")
    p.add_argument("--report", type=Path, default=None, help="JSON of the parity (and int8) measurements")
    p.add_argument("--threads", type=int, default=1, help="threads of the latency measurements (--int8)")
    _allow_module_arg(p)
    p.set_defaults(func=cmd_export, inputs=("model", "data"), outputs=("out", "report"),
                   minimums={"calibration_slices": 1, "threads": 1, "int8_dice_loss": 0})


def cmd_export(args) -> None:
    import onnx

    from hkd.deploy.export import ARGMAX_AGREEMENT, LOGIT_TOLERANCE, export
    from hkd.guard import check_replaceable
    from hkd.io import atomic_path, write_json

    if args.out.suffix.lower() != ".onnx":
        raise DataError(f"--out {args.out}: an ONNX model is written as .onnx")
    if args.int8_dice_loss is not None and not args.int8:
        raise DataError("--int8-dice-loss: a limit of --int8; add --int8 or leave it out")
    for path in (args.out, args.report):  # before any work
        if path is not None:
            check_replaceable(path)
    _allow(args)
    _threads(args.threads)
    checkpoint = best_on_validation(args.model)
    proto, report = export(checkpoint, args.data, int8=args.int8, calibration=args.calibration_slices,
                           threads=args.threads, int8_dice_loss=args.int8_dice_loss)
    with atomic_path(args.out) as tmp:
        onnx.save(proto, tmp)
    if len(args.model) > 1:
        report["export"]["chosen_from"] = [str(m) for m in args.model]
        print(f"{checkpoint}: the best validation Dice of {len(args.model)} runs")
    if args.report:
        write_json(args.report, {**report, "file_bytes": args.out.stat().st_size})
    p = report["parity"]
    print(f"{args.out}: ONNX Runtime vs PyTorch on {p['slices']} slices of {p['on']}: max |logit difference| "
          f"{p['max_abs_logit_diff']:.3g} (tolerance {LOGIT_TOLERANCE:g}), arg-max agreement "
          f"{p['argmax_agreement']:.6%} (at least {ARGMAX_AGREEMENT:.2%}); spatial size "
          f"{'dynamic' if report['export']['dynamic_spatial'] else 'fixed'}")
    if "int8" in report:
        q = report["int8"]
        lat = q["latency_ms"]
        m = q["mean_dice"]
        print(f"int8: mean test Dice {m['fp32']:.4f} -> {m['int8']:.4f} ({m['change']:+.4f}, 95% CI "
              f"[{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}] over the {m['cases']} test cases; the loss allowed "
              f"{m['limit']}); arg-max agreement "
              f"with fp32 {q['agreement_with_fp32']['argmax_agreement']:.4%}; latency per slice "
              f"{lat['fp32']['median_ms']:.2f} -> {lat['int8']['median_ms']:.2f} ms ({lat['threads']} thread(s))")
        c = q["choice"]
        why = [f"the {' and '.join(p.rstrip('.') for p in c['float_parts'])}, by design"] if c["float_parts"] else []
        why += [f"for the Dice: {', '.join(c['kept_for_dice'])}"] if c["kept_for_dice"] else []
        print(f"int8: {len(c['kept_float'])} of {c['layers']} convolutions kept in float ({'; '.join(why) or 'none'}): "
              f"validation Dice loss {c['val_mean_dice_loss']:+.4f} (at most {c['limit']})")
        for organ, d in q["dice"].items():
            print(f"  {organ}: {d['fp32']:.4f} -> {d['int8']:.4f} ({d['change']:+.4f})")


def best_on_validation(checkpoints: list[Path]) -> Path:
    """The checkpoint whose run has the best validation Dice (``val_dice`` of its metrics.json); the first of
    equals. One checkpoint is returned as it is."""
    import json

    if len(checkpoints) == 1:
        return checkpoints[0]
    scores = {}
    for ckpt in checkpoints:
        path = ckpt.parent / "metrics.json"
        try:
            scores[ckpt] = float(json.loads(path.read_text())["val_dice"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"--model {ckpt}: no validation Dice to choose by in {path} ({exc})") from None
    return max(checkpoints, key=lambda c: scores[c])


def _named_paths(items: list[str], flag: str) -> dict[str, Path]:
    bad = [item for item in items if "=" not in item or not item.split("=", 1)[0]]
    if bad:
        raise DataError(f"{flag}: expected NAME=CHECKPOINT, got {bad}")
    names = [item.split("=", 1)[0] for item in items]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"{flag}: the name {twice[0]} is given twice; each model needs its own name")
    return {name: Path(path) for name, path in (item.split("=", 1) for item in items)}


def parser_cost(sub) -> None:
    p = sub.add_parser("cost", help="parameters, FLOPs, file size, CPU latency and peak memory of trained models, in "
                       "PyTorch and ONNX Runtime (OpenVINO with its extra; int8 with --data)")
    p.add_argument("--models", required=True, nargs="+", help="NAME=CHECKPOINT (teacher=..., a width's student=...)")
    p.add_argument("--data", type=Path, default=None,
                   help="prepared dataset: its test volumes are timed too, its training slices calibrate the int8 row")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of every measurement")
    p.add_argument("--runs", type=int, default=20, help="timed runs per latency (after warm-up), at least 20")
    p.add_argument("--volumes", type=int, default=2, help="test volumes timed per model")
    p.add_argument("--out-csv", required=True, type=Path, help="the cost table, one row per model and runtime")
    p.add_argument("--out-md", type=Path, default=None, help="the table as Markdown")
    p.add_argument("--out-html", type=Path, default=None, help="the table as a page for the report")
    _allow_module_arg(p)
    p.set_defaults(func=cmd_cost, inputs=("models", "data"),
                   outputs=("out_csv", "out_md", "out_html"), minimums={"threads": 1, "volumes": 0})


def cmd_cost(args) -> None:
    import pandas as pd

    from hkd.deploy.cost import checkpoint_cost, cost_display
    from hkd.evaluate.tables import to_html, to_markdown
    from hkd.io import atomic_path, write_text

    if args.runs < 20:
        raise DataError(f"--runs: {args.runs}; a latency is the median of at least 20 timed runs")
    models = _named_paths(args.models, "--models")
    _allow(args)
    rows = []
    for name, path in models.items():
        rows += checkpoint_cost(name, path, threads=args.threads, runs=args.runs, prepared=args.data,
                                volumes=args.volumes)
    table = pd.DataFrame(rows)
    with atomic_path(args.out_csv) as tmp:
        table.to_csv(tmp, index=False)
    shown = cost_display(table)
    title = f"Cost per model: CPU, {args.threads} thread(s), batch 1"
    if args.out_md:
        write_text(args.out_md, to_markdown(shown, digits=3))
    if args.out_html:
        write_text(args.out_html, to_html(shown, title, digits=3))
    print(to_markdown(shown, digits=3))
