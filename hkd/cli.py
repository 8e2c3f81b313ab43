"""The hkd command line: every workflow step is a subcommand, usable without Snakemake."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from contextlib import nullcontext
from pathlib import Path

from hkd.data.cases import DataError
from hkd.data.synapse import DOWNLOAD_TIMEOUT

log = logging.getLogger("hkd")
# Formats of `hkd split` and `hkd prepare` (hkd.data.sources.FORMATS, spelled out to keep imports light).
SOURCE_FORMATS = ("rawdata", "transunet", "kits19", "lits")


def _is_inline_json(value: str) -> bool:
    return value.strip()[:1] in '{["'


def _json_arg(value: str, flag: str):
    """A JSON value given inline, or the path of a JSON/YAML file holding it; errors name ``flag``."""
    if _is_inline_json(value):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"{flag}: not valid JSON ({exc})") from None
    path = Path(value)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"{flag}: cannot read {path} ({exc.strerror or exc})") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DataError(f"{flag}: {path} is not valid YAML ({' '.join(str(exc).split())})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{flag}: {path} is not valid JSON ({exc})") from None


def _json_object(value: str, flag: str, required: tuple[str, ...] = ()) -> dict:
    """A JSON object argument that must hold the ``required`` keys."""
    obj = _json_arg(value, flag)
    if not isinstance(obj, dict):
        raise DataError(f"{flag}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise DataError(f"{flag}: missing key(s) {missing}")
    return obj


def _check_train_params(params: dict, flag: str = "--params") -> None:
    """Keys and method of a training config, checked before any data is read."""
    from dataclasses import MISSING, fields

    from hkd import distill
    from hkd.train.trainer import TrainConfig

    known = {f.name: f for f in fields(TrainConfig)}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise DataError(f"{flag}: unknown key(s) {unknown}; known: {sorted(known)}")
    missing = [name for name, f in known.items()
               if f.default is MISSING and f.default_factory is MISSING and name not in params]
    if missing:
        raise DataError(f"{flag}: missing key(s) {missing} (e.g. \"model\": {{\"arch\": \"squeezeunet\"}})")
    method = params.get("method", "scratch")
    if method not in distill.available():
        raise DataError(f"{flag}: unknown method '{method}'; available: {', '.join(distill.available())}")


def cmd_phantom(args) -> None:
    from hkd.data.phantom import write_phantom_dataset
    from hkd.io import atomic_dir

    tumours = None if args.tumours is None else _json_object(args.tumours, "--tumours")
    with atomic_dir(args.out) as tmp:
        ids = write_phantom_dataset(tmp, n_cases=args.cases, seed=args.seed, size=args.size,
                                    slices=tuple(args.slices), spacing_xy=tuple(args.spacing_xy),
                                    slice_thickness=tuple(args.slice_thickness), layout=args.layout,
                                    tumours=tumours)
    log.info("wrote %d phantom cases to %s", len(ids), args.out)


def cmd_download(args) -> None:
    if args.source == "kits19":
        from hkd.data import kits19

        path = kits19.download(args.out, args.cases, args.imaging_url or kits19.IMAGING_URL,
                               args.labels_url or kits19.LABELS_URL, timeout=args.timeout)
        log.info("downloaded %d KiTS19 cases to %s", args.cases, path)
        return
    from hkd.data.synapse import download

    path = download(args.entity, args.out, args.md5, timeout=args.timeout)
    log.info("downloaded %s to %s", args.entity, path)


def cmd_extract(args) -> None:
    from hkd.data.synapse import extract_zip

    extract_zip(args.zip, args.out, args.md5)
    log.info("extracted %s to %s", args.zip, args.out)


def cmd_split(args) -> None:
    from hkd.data.sources import list_cases
    from hkd.data.split import make_split
    from hkd.io import write_json

    counts = list_cases(args.source, args.format)
    split = make_split(list(counts), args.preset, tuple(args.ratios), args.seed, args.file)
    result = {
        "preset": args.preset,
        "seed": args.seed,
        **split,
        "slices": {part: sum(counts[c] for c in ids) for part, ids in split.items()},
        "cases": {part: len(ids) for part, ids in split.items()},
    }
    write_json(args.out, result)
    log.info("split %s: cases %s, slices %s", args.out, result["cases"], result["slices"])


def cmd_prepare(args) -> None:
    from hkd.data.preprocess import prepare_dataset
    from hkd.data.sources import iter_cases
    from hkd.data.split import split_argument

    p = _json_object(args.params, "--params", ("image_size", "hu_window", "label_map", "classes"))
    split = split_argument(_json_arg(str(args.split), "--split"), "--split")
    label_map = {int(k): int(v) for k, v in p["label_map"].items()}
    classes = list(p["classes"])
    liver_ids = [k for k, v in label_map.items() if classes[v] == "liver"] if "liver" in classes else []
    cases = iter_cases(args.source, args.format, [c for ids in split.values() for c in ids],
                       liver_id=liver_ids[0] if len(liver_ids) == 1 else None)
    meta = prepare_dataset(cases, split, args.out, image_size=int(p["image_size"]),
                           hu_window=tuple(p["hu_window"]), label_map=label_map, classes=classes,
                           scale=tuple(p.get("scale", (0.0, 1.0))), task=p.get("task", "organs"),
                           progress=not args.quiet)
    log.info("prepared %s: slices %s", args.out, meta["slices"])


def cmd_describe_data(args) -> None:
    from hkd.data.summary import data_summary, summary_display
    from hkd.evaluate.tables import to_html, to_markdown
    from hkd.io import atomic_path, write_text

    summary = data_summary(args.data)
    wide, splits = summary_display(summary)
    with atomic_path(args.out) as tmp:
        summary.to_csv(tmp, index=False)
    if args.out_html:
        write_text(args.out_html, to_html(wide, f"Prepared data ({splits})", digits=2))
    print(splits)
    print(to_markdown(wide, digits=2))


def cmd_train(args) -> None:
    import torch

    from hkd.train.trainer import train

    if args.threads:
        torch.set_num_threads(args.threads)
    params = _json_object(args.params, "--params")
    _check_train_params(params)
    # Concurrent local jobs each take their own GPU (a no-op with one GPU, none, or under SLURM).
    with _claimed_gpu(args, {str(params.get("device", "auto"))}):
        metrics = train(params, args.data, args.out, resume_dir=args.work, teacher_ckpt=args.teacher,
                        progress=not args.quiet, teacher_cache=args.teacher_cache)
    log.info("%s: status %s, best val dice %s", args.out, metrics["status"], metrics["val_dice"])


def cmd_train_cohort(args) -> None:
    import torch

    from hkd.io import write_json
    from hkd.train.lockstep import train_cohort

    if args.threads:
        torch.set_num_threads(args.threads)
    members = _json_object(args.members, "--members")
    if not members:
        raise DataError("--members: no member to train")
    publish = _json_object(args.publish, "--publish") if args.publish else {}
    unknown = sorted(set(publish) - set(members))
    if unknown:
        raise DataError(f"--publish: no member(s) {unknown} in --members")
    for name, params in members.items():
        if not isinstance(params, dict):
            raise DataError(f"--members: member '{name}' is not a JSON object")
        _check_train_params(params, f"--members '{name}'")
    with _claimed_gpu(args, {str(p.get("device", "auto")) for p in members.values()}):
        done = train_cohort(members, args.data, args.root, args.teacher, progress=not args.quiet,
                            publish={name: Path(folder) for name, folder in publish.items()})
    for name in members:
        done["members"][name]["config"] = members[name]
    write_json(args.manifest, done)
    log.info("cohort %s: trained %s, %d teacher passes for %d distilled steps", args.root,
             [n for n, d in done["members"].items() if d["trained"]], done["teacher_passes"], done["teacher_reads"])


def cmd_teacher_cache(args) -> None:
    import torch

    from hkd import distill
    from hkd.devices import resolve_device
    from hkd.train.teacher_cache import write_cache
    from hkd.train.trainer import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.method not in distill.available():
        raise DataError(f"--method: unknown method '{args.method}'; available: {', '.join(distill.available())}")
    names = distill.get(args.method).required_teacher_features(_json_object(args.options, "--options"))
    teacher, _ = load_model(args.teacher)
    shapes = write_cache(teacher, args.data, list(names), args.out, device=resolve_device(args.device))
    log.info("cached teacher features %s in %s", shapes, args.out)


def cmd_evaluate(args) -> None:
    from hkd.evaluate.volume import evaluate_run
    from hkd.io import atomic_path

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    table = evaluate_run(args.run, args.data, model_name=args.model_name, method=args.method, width=args.width,
                         seed=args.seed, part=args.part, device=args.device)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    dice = table[table["metric"] == "dice"]["value"].mean()
    log.info("%s: %d cases, mean Dice %.4f", args.model_name, table["case"].nunique(), dice)


def _read_evals(paths) -> "pd.DataFrame":
    from hkd.evaluate.tables import read_evals

    return read_evals(paths)


def cmd_tables(args) -> None:
    from hkd.evaluate.tables import organ_table, summary_table, to_html, to_markdown
    from hkd.io import atomic_path, write_text

    evals = _read_evals(args.evals)
    out = args.out_dir
    titles = {"summary": "Test metrics per model (mean and std over seeds)",
              "organs": "Test Dice, VOE, RVD and HD95 per model and class (mean and std over seeds)"}
    for name, table in (("summary", summary_table(evals)), ("organs", organ_table(evals))):
        with atomic_path(out / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False)
        write_text(out / f"{name}.md", to_markdown(table))
        write_text(out / f"{name}.html", to_html(table, titles[name]))
        if name == "summary":
            print(to_markdown(table))


def cmd_hypotheses(args) -> None:
    import pandas as pd

    from hkd.evaluate.hypotheses import explanation, report_markdown, study_claims
    from hkd.evaluate.tables import to_html
    from hkd.io import atomic_path, write_text

    context = pd.read_csv(args.context, dtype={"case": str, "width": str}) if args.context else None
    table = study_claims(_read_evals(args.evals), context, seed=args.seed)
    with atomic_path(args.out_csv) as tmp:
        table.to_csv(tmp, index=False)
    text = report_markdown(table, seed=args.seed)
    write_text(args.out_md, text)
    write_text(args.out_html, to_html(table, "Hypothesis verdicts", notes=explanation(seed=args.seed, markdown=False)))
    print(text)


def cmd_context(args) -> None:
    from hkd.explain.context import context_table
    from hkd.io import atomic_path

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    table = context_table(args.data, _json_arg(args.runs, "--runs"), dilation=args.dilation, n_slices=args.n_slices,
                          seed=args.seed)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    log.info("%s", table.groupby(["method", "width"])["outside_mass"].mean().to_string())


def _models_arg(items: list[str]) -> dict[str, str]:
    """``NAME=RUN_FOLDER`` pairs of ``hkd figures --models``."""
    bad = [item for item in items if "=" not in item or not item.split("=", 1)[0]]
    if bad:
        raise DataError(f"--models: expected NAME=RUN_FOLDER, got {bad}")
    return dict(item.split("=", 1) for item in items)


def cmd_figures(args) -> None:
    from hkd.figures.make import make_study_figures

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    runs = _models_arg(args.models)
    slices = _json_arg(args.slices, "--slices")
    slices = slices if slices == "coverage" else [(str(c), int(i)) for c, i in slices]
    bad = [item for item in args.logs or [] if "=" not in item or not item.split("=", 1)[0]]
    if bad:
        raise DataError(f"--logs: expected NAME=LOG_CSV, got {bad}")
    logs = dict(item.split("=", 1) for item in args.logs) if args.logs else {n: Path(d) / "log.csv" for n, d in runs.items()}
    paths = make_study_figures(args.data, {name: Path(d) / "best.pt" for name, d in runs.items()}, args.out_dir,
                               slice_selection=slices, n_slices=args.n_slices, logs=logs, summary_csv=args.summary)
    log.info("wrote %s", ", ".join(str(p) for p in paths))


def cmd_overview(args) -> None:
    from hkd.figures.overview import write_overview

    out = write_overview(args.out, _json_object(args.run, "--run"), args.split, args.summary, args.hypotheses,
                         args.figure)
    log.info("wrote %s", out)


def _add_training_job_options(p: argparse.ArgumentParser) -> None:
    """Threads, GPU choice and quiet output, shared by the training commands."""
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--gpu-locks", type=Path, default=None,
                   help="folder (yours) of per-GPU lock files shared by concurrent jobs (default: a per-user folder, "
                        "$XDG_RUNTIME_DIR/hkd-gpu-locks or <tmp>/hkd-gpu-locks-<uid>)")
    p.add_argument("--jobs-per-gpu", type=int, default=1,
                   help="jobs one GPU takes at once, when concurrent jobs pick among several GPUs (default 1)")
    p.add_argument("--quiet", action="store_true")


def _claimed_gpu(args, devices: set[str]):
    """The GPU claim of a training command whose runs use ``devices`` (none for CPU-only runs)."""
    from hkd.devices import claim_gpu

    if not any(d.startswith(("auto", "cuda")) for d in devices):
        return nullcontext()
    return claim_gpu(args.gpu_locks, slots=args.jobs_per_gpu)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hkd", description="Heterogeneous knowledge distillation study: every workflow step is a subcommand, "
        "usable without Snakemake. 'hkd COMMAND --help' lists a command's options.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="generate the synthetic abdominal CT phantom (Synapse RawData layout)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--slices", type=int, nargs=2, default=(40, 56), metavar=("MIN", "MAX"))
    p.add_argument("--spacing-xy", type=float, nargs=2, default=(0.7, 0.9), metavar=("MIN", "MAX"))
    p.add_argument("--slice-thickness", type=float, nargs=2, default=(2.5, 5.0), metavar=("MIN", "MAX"))
    p.add_argument("--layout", default="synapse", choices=["synapse", "kits19", "lits"],
                   help="folder layout and labels: Synapse RawData (BTCV ids), KiTS19 or LiTS (1 organ, 2 tumour)")
    p.add_argument("--tumours", default=None,
                   help="JSON object: lesions in the kidneys (kits19) or liver (lits); keys count, radius_mm, "
                        "contrast_hu (each [MIN, MAX])")
    p.set_defaults(func=cmd_phantom, outputs=("out",))

    p = sub.add_parser("download", help="download the Synapse archive (needs SYNAPSE_AUTH_TOKEN or ~/.synapseConfig) "
                       "or the labelled KiTS19 cases (no account needed)")
    p.add_argument("--source", default="synapse", choices=["synapse", "kits19"])
    p.add_argument("--entity", default="syn3379050")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--md5", default=None)
    p.add_argument("--timeout", type=float, default=DOWNLOAD_TIMEOUT,
                   help=f"seconds before the whole download is abandoned (default {DOWNLOAD_TIMEOUT:g})")
    p.add_argument("--cases", type=int, default=210, help="kits19: labelled cases 0..N-1 to download (default 210)")
    p.add_argument("--imaging-url", default=None, help="kits19: imaging URL template with {case} (default: official)")
    p.add_argument("--labels-url", default=None,
                   help="kits19: segmentation URL template with {case} (default: official)")
    p.set_defaults(func=cmd_download, outputs=("out",))

    p = sub.add_parser("extract", help="extract a RawData zip safely")
    p.add_argument("--zip", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--md5", default=None)
    p.set_defaults(func=cmd_extract, inputs=("zip",), outputs=("out",))

    p = sub.add_parser("split", help="patient-level train/val/test split")
    p.add_argument("--source", required=True, type=Path)
    p.add_argument("--format", default="rawdata", choices=SOURCE_FORMATS)
    p.add_argument("--preset", default="random", choices=["random", "transunet", "file"])
    p.add_argument("--ratios", type=float, nargs=3, default=(0.6, 0.2, 0.2))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--file", default=None, help="split file for --preset file")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_split, inputs=("source", "file"), outputs=("out",))

    p = sub.add_parser("prepare", help="preprocess cases into the prepared HDF5 dataset")
    p.add_argument("--source", required=True, type=Path)
    p.add_argument("--format", default="rawdata", choices=SOURCE_FORMATS)
    p.add_argument("--split", required=True, type=Path)
    p.add_argument("--params", required=True, help="JSON (inline or file): image_size, hu_window, label_map, classes; "
                   "optional scale ([0, 1] or [-1, 1]) and task (organs, organ+tumour, tumour)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_prepare, inputs=("source", "split", "params"), outputs=("out",))

    p = sub.add_parser("train", help="train a teacher or a (scratch or distilled) student")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--params", required=True, help="training config as JSON (inline or file)")
    p.add_argument("--out", required=True, type=Path, help="folder for best.pt, last.pt, log.csv, metrics.json")
    p.add_argument("--work", type=Path, default=None, help="folder for the resume state (kept across kills)")
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint, for distillation")
    p.add_argument("--teacher-cache", type=Path, default=None,
                   help="teacher feature cache (hkd teacher-cache), used instead of running the teacher")
    _add_training_job_options(p)
    p.set_defaults(func=cmd_train, inputs=("data", "params", "teacher", "teacher_cache"), outputs=("out", "work"))

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
    _add_training_job_options(p)
    p.set_defaults(func=cmd_train_cohort, inputs=("data", "members", "teacher"), outputs=("manifest", "root"))

    p = sub.add_parser("teacher-cache", help="store the teacher's features on the training slices for a method")
    p.add_argument("--teacher", required=True, type=Path, help="teacher checkpoint")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--method", required=True)
    p.add_argument("--options", default="{}", help="the method's options as JSON")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_teacher_cache, inputs=("teacher", "data", "options"), outputs=("out",))

    p = sub.add_parser("evaluate", help="volume-level Dice, IoU and HD95 of one trained run on the test cases")
    p.add_argument("--run", required=True, type=Path, help="run folder (best.pt, last.pt, metrics.json)")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--model-name", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--width", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--part", default="test", choices=["val", "test"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="tidy CSV")
    p.set_defaults(func=cmd_evaluate, inputs=("run", "data"), outputs=("out",))

    p = sub.add_parser("describe-data", help="cases, slices and class shares per split of a prepared dataset")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--out", required=True, type=Path, help="CSV, one row per split and class")
    p.add_argument("--out-html", type=Path, default=None, help="the table as a page for the report")
    p.set_defaults(func=cmd_describe_data, inputs=("data",), outputs=("out", "out_html"))

    p = sub.add_parser("tables", help="study tables (mean and std over seeds) from evaluation CSVs")
    p.add_argument("--evals", required=True, nargs="+", type=Path)
    p.add_argument("--out-dir", required=True, type=Path)
    p.set_defaults(func=cmd_tables, inputs=("evals",), outputs=("out_dir",))

    p = sub.add_parser("hypotheses", help="paired tests and verdicts of every method against scratch")
    p.add_argument("--evals", required=True, nargs="+", type=Path)
    p.add_argument("--context", type=Path, default=None, help="Grad-CAM context CSV from hkd context")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--out-csv", required=True, type=Path)
    p.add_argument("--out-md", required=True, type=Path)
    p.add_argument("--out-html", required=True, type=Path)
    p.set_defaults(func=cmd_hypotheses, inputs=("evals", "context"), outputs=("out_csv", "out_md", "out_html"))

    p = sub.add_parser("figures", help="qualitative and summary figures: overlays, saliency, Grad-CAM, latent PCA, "
                       "training curves, Dice vs parameters (the Grad-CAM context table is 'hkd context')")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--models", required=True, nargs="+", help="NAME=RUN_FOLDER; names are METHOD_wWIDTH or teacher")
    p.add_argument("--summary", type=Path, default=None, help="summary.csv from hkd tables")
    p.add_argument("--logs", nargs="+", default=None,
                   help="NAME=LOG_CSV of every run for the curves and gradient ratios (NAME: METHOD_wWIDTH_sSEED or "
                        "teacher); default: each --models folder's log.csv")
    p.add_argument("--slices", default='"coverage"', help='JSON: "coverage" or [[case, slice], ...]')
    p.add_argument("--n-slices", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out-dir", required=True, type=Path)
    p.set_defaults(func=cmd_figures, inputs=("data", "models", "summary", "slices"), outputs=("out_dir",))

    p = sub.add_parser("overview", help="the report's first page: what the study ran and what came out (HTML)")
    p.add_argument("--run", required=True, help="JSON object: what the configuration ran, shown as given")
    p.add_argument("--split", required=True, type=Path, help="split.json from hkd split")
    p.add_argument("--summary", required=True, type=Path, help="summary.csv from hkd tables")
    p.add_argument("--hypotheses", required=True, type=Path, help="the verdict page from hkd hypotheses")
    p.add_argument("--figure", required=True, type=Path, help="dice_vs_params.png from hkd figures")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_overview, inputs=("split", "summary", "hypotheses", "figure"), outputs=("out",))

    p = sub.add_parser("context", help="Grad-CAM mass outside the dilated organ, per run, slice and organ")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--runs", required=True,
                   help="JSON list of {model, method, width, seed, checkpoint} (inline or file)")
    p.add_argument("--dilation", type=int, default=3, help="pixels around the organ that count as inside")
    p.add_argument("--n-slices", type=int, default=16, help="validation slices sampled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_context, inputs=("data", "runs"), outputs=("out",))
    for action in sub._choices_actions:  # 'hkd COMMAND --help' opens with the command's one-line help
        sub.choices[action.dest].description = action.help
    return parser


def _paths(args, names: tuple[str, ...]) -> dict[str, str]:
    """The paths named by the arguments ``names`` of ``args``, keyed by their flag (lists are expanded)."""
    out = {}
    for name in names:
        flag = "--" + name.replace("_", "-")
        value = getattr(args, name, None)
        values = value if isinstance(value, list) else [value]
        for i, v in enumerate(values):
            if v is None or (isinstance(v, str) and _is_inline_json(v)):
                continue
            if name == "models":  # NAME=RUN_FOLDER
                v = str(v).split("=", 1)[-1]
            out[flag if len(values) == 1 else f"{flag}[{i}]"] = v
    return out


def _one_line(exc: BaseException) -> str:
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    return " ".join(str(msg).split())


def main(argv: list[str] | None = None) -> int:
    from hkd.io import check_outputs_spare_inputs

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        check_outputs_spare_inputs(_paths(args, args.outputs), _paths(args, getattr(args, "inputs", ())))
        args.func(args)
    except (DataError, ValueError, KeyError, OSError) as exc:
        # Bad input: one line that names the file, key or argument. Other exceptions are bugs and keep
        # their traceback.
        print(f"hkd {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hkd {args.command}: interrupted (nothing half-written was kept)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
