"""Training commands: one run, a lock-step cohort, and the teacher's feature cache.

Each command is ``parser_<name>`` (its arguments) and ``cmd_<name>`` (what it does); the modules
they use are imported inside them, so a command runs only its own code (``hkd/workflow_deps.py``).
"""

from __future__ import annotations

import argparse
import logging
from contextlib import nullcontext
from pathlib import Path

from hkd.commands.args import json_object
from hkd.errors import DataError

log = logging.getLogger("hkd")


def train_config(params: dict, flag: str = "--params"):
    """The job's training config (:class:`~hkd.train.config.TrainConfig`), parsed and checked once, before any
    data is read; its errors name ``flag``."""
    from hkd.train.config import TrainConfig

    if not isinstance(params, dict):
        raise DataError(f"{flag}: not a JSON object")
    try:
        return TrainConfig.from_dict(params)
    except ValueError as exc:
        raise DataError(f"{flag}: {str(exc).removeprefix('training config: ')}") from None


def add_training_job_options(p: argparse.ArgumentParser) -> None:
    """Threads, GPU choice and quiet output, shared by the training commands."""
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--gpu-locks", type=Path, default=None,
                   help="folder (yours) of per-GPU lock files shared by concurrent jobs (default: a per-user folder, "
                        "$XDG_RUNTIME_DIR/hkd-gpu-locks or <tmp>/hkd-gpu-locks-<uid>)")
    p.add_argument("--jobs-per-gpu", type=int, default=1,
                   help="jobs one GPU takes at once, when concurrent jobs pick among several GPUs (default 1)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--tracker", choices=("none", "tensorboard", "mlflow"), default="none",
                   help="live training curves (hkd.train.tracking): TensorBoard events in <run>/tensorboard, or a "
                        "run in an MLflow file store; they change no number of the run")
    p.add_argument("--tracking-store", type=Path, default=None,
                   help="MLflow's file store (default <out>/mlruns); its experiment is named after the store's "
                        "parent folder (the study's)")


def tracker_of(args, run_dir: Path, name: str, cfg):
    """The tracker of one run (``hkd train --tracker``) of the parsed config ``cfg``, named ``name`` in MLflow."""
    from hkd.models import label
    from hkd.train.tracking import open_tracker

    full = dict(vars(cfg))  # every key, defaults included, as MLflow parameters
    tags = {"method": full["method"], "seed": full["seed"], "model": label(full["model"])}
    return open_tracker(args.tracker, run_dir, name, full, store=args.tracking_store, tags=tags)


def claimed_gpu(args, devices: set[str]):
    """The GPU claim of a training command whose runs use ``devices`` (none for CPU-only runs)."""
    from hkd.devices import claim_gpu

    if not any(d.startswith(("auto", "cuda")) for d in devices):
        return nullcontext()
    return claim_gpu(args.gpu_locks, slots=args.jobs_per_gpu)


def parser_train(sub) -> None:
    p = sub.add_parser("train", help="train a teacher or a (scratch or distilled) student")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--params", required=True, help="training config as JSON (inline or file)")
    p.add_argument("--out", required=True, type=Path, help="folder for best.pt, last.pt, log.csv, metrics.json")
    p.add_argument("--work", type=Path, default=None, help="folder for the resume state (kept across kills)")
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint, for distillation")
    p.add_argument("--teacher-cache", type=Path, default=None,
                   help="teacher feature cache (hkd teacher-cache), used instead of running the teacher")
    p.add_argument("--run-name", default=None, help="the run's name in MLflow (default: the --out folder's name)")
    add_training_job_options(p)
    p.set_defaults(func=cmd_train, inputs=("data", "params", "teacher", "teacher_cache"),
                   outputs=("out", "work", "gpu_locks", "tracking_store"))


def cmd_train(args) -> None:
    import torch

    from hkd.train.trainer import train

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = train_config(json_object(args.params, "--params"))
    # Concurrent local jobs each take their own GPU (a no-op with one GPU, none, or under SLURM).
    with claimed_gpu(args, {cfg.device}):
        tracker = tracker_of(args, args.out, args.run_name or args.out.resolve().name, cfg)
        metrics = train(cfg, args.data, args.out, resume_dir=args.work, teacher_ckpt=args.teacher,
                        progress=not args.quiet, teacher_cache=args.teacher_cache, tracker=tracker)
    log.info("%s: status %s, best val dice %s", args.out, metrics["status"], metrics["val_dice"])


def parser_train_cohort(sub) -> None:
    p = sub.add_parser("train-cohort", help="train several students of one seed in lock-step, one teacher pass "
                       "per batch for all of them")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--members", required=True, help="JSON object: member name -> training config (as for train)")
    p.add_argument("--root", required=True, type=Path,
                   help="folder of the members' runs (<root>/<name>); a member already trained there with the "
                        "same configuration, data, teacher and code is kept")
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint, for the distilled members")
    p.add_argument("--publish", default=None,
                   help="JSON object: member name -> folder that receives a copy of its run (best.pt, last.pt, "
                        "log.csv, metrics.json), every member whether trained now or kept")
    p.add_argument("--manifest", required=True, type=Path, help="JSON written at the end: each member's identity")
    add_training_job_options(p)
    p.set_defaults(func=cmd_train_cohort, inputs=("data", "members", "teacher"),
                   outputs=("manifest", "root", "gpu_locks", "tracking_store"))


def cmd_train_cohort(args) -> None:
    import torch

    from hkd.io import write_json
    from hkd.train.lockstep import train_cohort

    if args.threads:
        torch.set_num_threads(args.threads)
    members = json_object(args.members, "--members")
    if not members:
        raise DataError("--members: no member to train")
    publish = json_object(args.publish, "--publish") if args.publish else {}
    unknown = sorted(set(publish) - set(members))
    if unknown:
        raise DataError(f"--publish: no member(s) {unknown} in --members")
    cfgs = {name: train_config(params, f"--members '{name}'") for name, params in members.items()}
    with claimed_gpu(args, {cfg.device for cfg in cfgs.values()}):
        trackers = {name: tracker_of(args, Path(publish.get(name) or args.root / name), f"{name}_s{cfg.seed}", cfg)
                    for name, cfg in cfgs.items()}
        done = train_cohort(cfgs, args.data, args.root, args.teacher, progress=not args.quiet,
                            publish={name: Path(folder) for name, folder in publish.items()}, trackers=trackers)
    for name in members:
        done["members"][name]["config"] = members[name]
    write_json(args.manifest, done)
    log.info("cohort %s: trained %s, %d teacher passes for %d distilled steps", args.root,
             [n for n, d in done["members"].items() if d["trained"]], done["teacher_passes"], done["teacher_reads"])


def parser_teacher_cache(sub) -> None:
    p = sub.add_parser("teacher-cache", help="store the teacher's features on the training slices for a method")
    p.add_argument("--teacher", required=True, type=Path, help="teacher checkpoint")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--method", required=True)
    p.add_argument("--options", default="{}", help="the method's options as JSON")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_teacher_cache, inputs=("teacher", "data", "options"), outputs=("out",))


def cmd_teacher_cache(args) -> None:
    import torch

    from hkd import distill
    from hkd.devices import resolve_device
    from hkd.train.teacher_cache import write_cache
    from hkd.models.checkpoint import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.method not in distill.available():
        raise DataError(f"--method: unknown method '{args.method}'; available: {', '.join(distill.available())}")
    names = distill.get(args.method).required_teacher_features(json_object(args.options, "--options"))
    teacher, spec = load_model(args.teacher)
    shapes = write_cache(teacher, spec, args.data, list(names), args.out, device=resolve_device(args.device))
    log.info("cached teacher features %s in %s", shapes, args.out)
