"""``hkd features``: the features a model spec records, measured on a probe slice."""

from __future__ import annotations

from pathlib import Path


def parser_features(sub) -> None:
    p = sub.add_parser("features", help="print the features a model records: module, channels, size, stride, offset")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="a study config (YAML); --key names the model spec in it")
    src.add_argument("--checkpoint", type=Path, help="a checkpoint written by hkd train")
    p.add_argument("--key", default="teacher.model",
                   help="dotted key of the model spec in --config (teacher.model, students.models.LABEL)")
    p.add_argument("--size", type=int, required=True, help="probe slice size in pixels (data.image_size)")
    p.add_argument("--classes", type=int, default=9, help="classes passed to hkd's own networks")
    p.set_defaults(func=cmd_features, inputs=("config", "checkpoint"), outputs=())


def _spec_from_config(path: Path, key: str) -> dict:
    import yaml

    node = yaml.safe_load(path.read_text()) or {}
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"{path}: no key {key!r} (missing {part!r})")
        node = node[part]
    if not isinstance(node, dict) or "arch" not in node:
        raise ValueError(f"{path}: {key} is not a model spec (a mapping with 'arch')")
    return node


def cmd_features(args) -> None:
    from hkd.models import build_model, recorder_of
    from hkd.models.checkpoint import load_model
    from hkd.models.recorder import table
    from hkd.train.preflight import run_spec

    if args.checkpoint:
        model, spec = load_model(args.checkpoint)
    else:
        from hkd.trust import allow_modules, spec_modules

        spec = run_spec(_spec_from_config(args.config, args.key), args.size, args.classes)
        allow_modules(spec_modules(spec))  # the user's own config names it
        model = build_model(spec)
    features = recorder_of(model, spec, args.key if args.config else str(args.checkpoint))
    print(table(features.describe(args.size), features.paths))
