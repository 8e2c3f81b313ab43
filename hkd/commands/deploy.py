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
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_predict, inputs=("model", "input", "preprocessing"), outputs=("out",))


def cmd_predict(args) -> None:
    from hkd.deploy import runtime
    from hkd.deploy.predict import check_classes, predict

    _threads(args.threads)
    model = runtime.load(args.model, _preprocessing_arg(args.preprocessing), threads=args.threads)
    check_classes(model, None if args.classes is None else [c.strip() for c in args.classes.split(",")])
    done, failed = predict(model, args.input, args.out, progress=not args.quiet, upsample=args.upsample,
                           tta=args.tta, probabilities=args.probabilities, batch_size=args.batch_size)
    for stats in done:
        organs = ", ".join(f"{name} {c['volume_mm3'] / 1000:.1f} ml" for name, c in stats["classes"].items())
        log.info("%s -> %s: %s", stats["input"], stats["segmentation"], organs)
    if failed:
        raise DataError(f"{len(failed)} of {len(failed) + len(done)} case(s) failed and were skipped: "
                        + "; ".join(f"{path}: {message}" for path, message in failed)
                        + f" ({len(done)} written to {args.out})")
