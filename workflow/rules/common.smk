# Configuration checks and helpers shared by every rule file.
import json
import os

from snakemake.utils import validate


validate(config, "../schemas/config.schema.yaml")


def _check_config(cfg):
    """Rules a JSON schema cannot express; each error names the key."""
    data = cfg["data"]
    ratios = data["split"]["ratios"]
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"config key data.split.ratios: {ratios} must sum to 1")
    lo, hi = data["hu_window"]
    if not hi > lo:
        raise ValueError(f"config key data.hu_window: upper bound {hi} must exceed lower bound {lo}")
    n_classes = len(data["classes"])
    bad = {k: v for k, v in data["label_map"].items() if v >= n_classes}
    if bad:
        raise ValueError(f"config key data.label_map: class ids {sorted(set(bad.values()))} have no name in data.classes")
    if data["source"] in ("zip", "folder", "transunet") and not data["path"]:
        raise ValueError(f"config key data.path: required for data.source '{data['source']}'")
    if data["split"]["preset"] == "file" and not data["split"]["file"]:
        raise ValueError("config key data.split.file: required when data.split.preset is 'file'")
    for key in ("slices", "spacing_xy", "slice_thickness"):
        lo, hi = data["phantom"][key]
        if lo > hi:
            raise ValueError(f"config key data.phantom.{key}: minimum {lo} exceeds maximum {hi}")


_check_config(config)

OUT = config["out"]
DATA = config["data"]
ENV = os.path.join(workflow.basedir, "envs", "hkd.yaml")


def code(*modules):
    """Source files of the hkd package a rule runs, declared as inputs so edits rerun the rule."""
    return [os.path.join(workflow.basedir, "hkd", m) for m in modules]


def as_json(obj):
    """Compact JSON for passing structured params to the hkd CLI."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
