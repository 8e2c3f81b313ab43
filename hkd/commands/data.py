"""Data commands: the phantom, downloads, extraction, the split, preparation and the data summary.

Each command is ``parser_<name>`` (its arguments) and ``cmd_<name>`` (what it does); the modules
they use are imported inside them, so a command runs only its own code (``hkd/workflow_deps.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from hkd.commands.args import json_arg, json_object

log = logging.getLogger("hkd")


def parser_phantom(sub) -> None:
    from hkd.data.sources import phantom_layouts

    p = sub.add_parser("phantom", help="generate the synthetic abdominal CT phantom (Synapse RawData layout)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--slices", type=int, nargs=2, default=(40, 56), metavar=("MIN", "MAX"))
    p.add_argument("--spacing-xy", type=float, nargs=2, default=(0.7, 0.9), metavar=("MIN", "MAX"))
    p.add_argument("--slice-thickness", type=float, nargs=2, default=(2.5, 5.0), metavar=("MIN", "MAX"))
    p.add_argument("--layout", default=phantom_layouts()[0], choices=phantom_layouts(),
                   help="folder layout and labels: Synapse RawData (BTCV ids), KiTS19 or LiTS (1 organ, 2 tumour)")
    p.add_argument("--tumours", default=None,
                   help="JSON object: lesions in the kidneys (kits19) or liver (lits); keys count, radius_mm, "
                        "contrast_hu (each [MIN, MAX])")
    p.add_argument("--scanner", default=None,
                   help="JSON object: another scanner's noise_hu [MIN, MAX], grain (voxels), contrast (a factor on "
                        "the difference from water) and hu_offset")
    p.set_defaults(func=cmd_phantom, outputs=("out",))


def cmd_phantom(args) -> None:
    from hkd.data.phantom import write_phantom_dataset
    from hkd.io import atomic_dir

    tumours = None if args.tumours is None else json_object(args.tumours, "--tumours")
    scanner = None if args.scanner is None else json_object(args.scanner, "--scanner")
    with atomic_dir(args.out) as tmp:
        ids = write_phantom_dataset(tmp, n_cases=args.cases, seed=args.seed, size=args.size,
                                    slices=tuple(args.slices), spacing_xy=tuple(args.spacing_xy),
                                    slice_thickness=tuple(args.slice_thickness), layout=args.layout,
                                    tumours=tumours, scanner=scanner)
    log.info("wrote %d phantom cases to %s", len(ids), args.out)


def parser_download(sub) -> None:
    from hkd.data.downloaders import DOWNLOAD_TIMEOUT, downloader
    from hkd.data.sources import downloadable

    sources = downloadable()
    p = sub.add_parser("download", help="download a source: " + ", ".join(sources))
    p.add_argument("--source", default=sources[0], choices=sources)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--timeout", type=float, default=DOWNLOAD_TIMEOUT,
                   help=f"seconds before the whole download is abandoned (default {DOWNLOAD_TIMEOUT:g})")
    for name in sources:
        downloader(name).add_arguments(p.add_argument_group(f"--source {name}"))
    p.set_defaults(func=cmd_download, outputs=("out",))


def cmd_download(args) -> None:
    from hkd.data.downloaders import downloader

    what = downloader(args.source).run(args)
    log.info("downloaded %s to %s", what, args.out)


def parser_extract(sub) -> None:
    p = sub.add_parser("extract", help="extract a RawData zip safely")
    p.add_argument("--zip", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--md5", default=None)
    p.set_defaults(func=cmd_extract, inputs=("zip",), outputs=("out",))


def cmd_extract(args) -> None:
    from hkd.data.archive import extract_zip

    extract_zip(args.zip, args.out, args.md5)
    log.info("extracted %s to %s", args.zip, args.out)


def parser_split(sub) -> None:
    from hkd.data.sources import FORMATS

    p = sub.add_parser("split", help="patient-level train/val/test split")
    p.add_argument("--source", required=True, type=Path)
    p.add_argument("--format", default="rawdata", choices=FORMATS)
    p.add_argument("--preset", default="random", choices=["random", "transunet", "file", "external"],
                   help="external: every case a test case (a cohort that is only evaluated)")
    p.add_argument("--ratios", type=float, nargs=3, default=(0.6, 0.2, 0.2))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--file", default=None, help="split file for --preset file")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_split, inputs=("source", "file"), outputs=("out",))


def cmd_split(args) -> None:
    from hkd.data.readers import list_cases
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


def parser_prepare(sub) -> None:
    from hkd.data.sources import FORMATS

    p = sub.add_parser("prepare", help="preprocess cases into the prepared HDF5 dataset")
    p.add_argument("--source", required=True, type=Path)
    p.add_argument("--format", default="rawdata", choices=FORMATS)
    p.add_argument("--split", required=True, type=Path)
    p.add_argument("--params", required=True, help="JSON (inline or file): image_size, hu_window, label_map, classes; "
                   "optional scale ([0, 1] or [-1, 1]) and task (organs, organ+tumour, tumour)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_prepare, inputs=("source", "split", "params"), outputs=("out",))


def cmd_prepare(args) -> None:
    from hkd.data.preprocess import prepare_dataset
    from hkd.data.readers import iter_cases, reader
    from hkd.data.split import split_argument

    p = json_object(args.params, "--params", ("image_size", "hu_window", "label_map", "classes"))
    split = split_argument(json_arg(str(args.split), "--split"), "--split")
    label_map = {int(k): int(v) for k, v in p["label_map"].items()}
    classes = list(p["classes"])
    named = getattr(reader(args.format), "label_map", None)  # a format whose files name their labels
    if named is not None:
        label_map = named(args.source, classes)
        log.info("label map from the names of %s's labels (not data.label_map): %s", args.source, label_map)
    liver_ids = [k for k, v in label_map.items() if classes[v] == "liver"] if "liver" in classes else []
    cases = iter_cases(args.source, args.format, [c for ids in split.values() for c in ids],
                       liver_id=liver_ids[0] if len(liver_ids) == 1 else None)
    meta = prepare_dataset(cases, split, args.out, image_size=int(p["image_size"]),
                           hu_window=tuple(p["hu_window"]), label_map=label_map, classes=classes,
                           scale=tuple(p.get("scale", (0.0, 1.0))), task=p.get("task", "organs"),
                           progress=not args.quiet)
    log.info("prepared %s: slices %s", args.out, meta["slices"])


def parser_describe_data(sub) -> None:
    p = sub.add_parser("describe-data", help="cases, slices and class shares per split of a prepared dataset")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--out", required=True, type=Path, help="CSV, one row per split and class")
    p.add_argument("--out-html", type=Path, default=None, help="the table as a page for the report")
    p.set_defaults(func=cmd_describe_data, inputs=("data",), outputs=("out", "out_html"))


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
