"""What a study runs, in words: the "what was run" lines of the report's first page (:mod:`hkd.figures.overview`
draws the page; the workflow passes these lines to ``hkd overview``). Standard library only (Snakemake reads
it when it parses the workflow).
"""

from __future__ import annotations

from hkd.data import sources


def describe_study(config: dict) -> dict[str, str]:
    """What the validated configuration ``config`` runs, in words (label -> text), for the first page."""
    data = config["data"]
    students = config["students"]
    teacher = config["teacher"]["model"]
    return {
        "data source": sources.describe(data),
        "slices": f"{data['image_size']} x {data['image_size']} px, HU window {data['hu_window']} "
        f"scaled to {data['scale']}",
        "task": f"{data['task']}: {', '.join(data['classes'][1:])}",
        "split": f"{data['split']['preset']} (seed {data['split']['seed']})",
        "teacher": ", ".join(f"{k} {v}" for k, v in teacher.items()),
        "students": "; ".join(
            ([f"{students['arch']}, widths {', '.join(students['widths'])}"] if students["widths"] else [])
            + [
                f"{label}: " + ", ".join(f"{k} {v}" for k, v in spec.items())
                for label, spec in students["models"].items()
            ]
        ),
        "methods": ", ".join(students["methods"]),
        "seeds": ", ".join(str(s) for s in students["seeds"]),
        "epochs": f"teacher {config['teacher']['train'].get('epochs', config['train']['epochs'])}, "
        f"students {students['train'].get('epochs', config['train']['epochs'])}",
        "device": config["device"],
    } | external_cohort(data)


def external_cohort(data: dict) -> dict[str, str]:
    """The "external cohort" line (data.external), where the study has one: how it differs from the study's data."""
    kind, external = sources.external_kind(data), data.get("external") or {}
    if kind == "none":
        return {}
    if kind == "folder":
        return {"external cohort": f"folder {external['path']} ({external['format']}), only evaluated"}
    scanner = external["scanner"]
    lo, hi = scanner["noise_hu"]
    return {"external cohort": (
        f"phantom: {external['cases']} new cases (seed {external['seed']}) from another scanner, only evaluated: "
        f"noise {lo:g}-{hi:g} HU, grain {scanner['grain']:g} voxel, contrast x{scanner['contrast']:g}, offset "
        f"{scanner['hu_offset']:+g} HU, slices {external['slice_thickness'][0]:g}-{external['slice_thickness'][1]:g}"
        f" mm, pixels {external['spacing_xy'][0]:g}-{external['spacing_xy'][1]:g} mm")}
