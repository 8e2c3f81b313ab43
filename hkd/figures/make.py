"""All study figures from trained checkpoints: segmentations, attributions, latent PCA, curves, scaling.

"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hkd.data.dataset import SliceSet, load_slices, read_meta
from hkd.explain import gradcam, saliency
from hkd.figures.attributions import attribution_grid
from hkd.figures import figure_path
from hkd.figures.curves import training_curves
from hkd.figures.gradients import gradient_ratios
from hkd.figures.latent import latent_pca
from hkd.figures.overlays import prediction_overlays
from hkd.figures.runs import describe
from hkd.figures.scaling import dice_vs_params
from hkd.models import FeatureRecorder, gradcam_layer, recorder_of
from hkd.models.checkpoint import load_model

MAX_DEFAULT_ORGANS = 4
LATENT_SLICES = 64  # validation slices in the latent PCA (chosen by organ coverage, across patients)
LATENT_MIN_SHARE = 0.1  # share of a latent cell an organ must cover to label the cell


def class_counts(labels: np.ndarray, n_classes: int, chunk: int = 64) -> np.ndarray:
    """Pixel count of every class in every slice: (N, n_classes) from (N, S, S) labels."""
    labels = np.asarray(labels)
    out = np.zeros((len(labels), n_classes), dtype=np.int64)
    for start in range(0, len(labels), chunk):
        block = labels[start:start + chunk].reshape(min(chunk, len(labels) - start), -1).astype(np.int64)
        offsets = block + n_classes * np.arange(len(block))[:, None]
        out[start:start + len(block)] = np.bincount(offsets.ravel(), minlength=len(block) * n_classes).reshape(
            len(block), n_classes)
    return out


def select_slices(data: SliceSet, selection: str | Sequence[Sequence], n_slices: int, n_classes: int,
                  organ_ids: Sequence[int] | None = None) -> list[int]:
    """Row indices of the slices to show.

    ``selection`` is a list of (case, slice index) pairs, or 'coverage': the ``n_slices`` slices
    showing the most of ``organ_ids`` (default all foreground classes; ties go to the larger organ
    area, then to the lower case id and slice index), taken from as many patients as possible: the
    best slice of each case first, then each case's second best, and so on (neighbouring slices of
    one patient look alike).
    """
    if isinstance(selection, str):
        if selection != "coverage":
            raise ValueError(f"slice selection must be 'coverage' or a list of (case, slice) pairs, got {selection!r}")
        counts = class_counts(data.label.numpy(), n_classes)
        ids = list(organ_ids) if organ_ids else list(range(1, n_classes))
        present = (counts[:, ids] > 0).sum(1)
        area = counts[:, ids].sum(1)
        key = lambda i: (-present[i], -area[i], data.case[i], int(data.index[i]))  # noqa: E731
        rank_in_case, seen = {}, Counter()
        for i in sorted(range(len(data)), key=key):
            rank_in_case[i] = seen[data.case[i]]
            seen[data.case[i]] += 1
        order = sorted(range(len(data)), key=lambda i: (rank_in_case[i], key(i)))
        return order[:max(0, n_slices)]
    where = {(str(c), int(i)): row for row, (c, i) in enumerate(zip(data.case, data.index))}
    rows = []
    for pair in selection:
        case, index = pair
        key = (str(case), int(index))
        if key not in where:
            raise ValueError(f"slice {key[0]}:{key[1]} is not in the validation set")
        rows.append(where[key])
    return rows


def resolve_organs(organs: Sequence[str] | None, classes: list[str]) -> list[int] | None:
    """Class ids of the named organs (None stays None)."""
    if organs is None:
        return None
    unknown = [o for o in organs if o not in classes[1:]]
    if unknown:
        raise ValueError(f"unknown organ(s) {unknown}; known: {classes[1:]}")
    return [classes.index(o) for o in organs]


def cell_organs(labels: np.ndarray, grid: tuple[int, int], n_classes: int, min_share: float = 0.1) -> np.ndarray:
    """The organ in each cell of a (h, w) grid over (R, S, S) labels, flattened to (R*h*w,).

    A cell is labelled with the organ covering most of its pixels when that organ covers at least
    ``min_share`` of the cell, and background otherwise. (A majority vote over all classes labels
    nearly every cell background: at 48 px a latent cell is 16x16 pixels, larger than most organs.)
    """
    r, s1, s2 = labels.shape
    h, w = grid
    if s1 % h or s2 % w:
        raise ValueError(f"label size {(s1, s2)} is not a multiple of the latent grid {grid}")
    cells = labels.reshape(r, h, s1 // h, w, s2 // w).transpose(0, 1, 3, 2, 4).reshape(r * h * w, -1)
    counts = class_counts(cells[:, None, :], n_classes)[:, 1:]
    organ = counts.argmax(1) + 1
    return np.where(counts.max(1) >= min_share * cells.shape[1], organ, 0)


@torch.no_grad()
def _predict(model: torch.nn.Module, images: torch.Tensor, device: torch.device) -> np.ndarray:
    return model(images.to(device)).argmax(1).cpu().numpy()


@torch.no_grad()
def _latent_vectors(features: FeatureRecorder, images: torch.Tensor, device: torch.device, batch: int = 32):
    """Per-position latent vectors (R*h*w, C) and the latent grid (h, w)."""
    zs = [features(images[i:i + batch].to(device), ["bottleneck"])["bottleneck"].float().cpu()
          for i in range(0, len(images), batch)]
    z = torch.cat(zs)
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).numpy(), tuple(z.shape[-2:])


def _seeds_note(names, runs: dict[str, dict] | None) -> str:
    seeds = sorted({describe(n, runs)["seed"] for n in names} - {None}, key=int)
    return f"students of seed {', '.join(seeds)}" if seeds else ""


def make_study_figures(prepared: Path, models: dict[str, Path], out_dir: Path, *,
                       slice_selection: str | list[tuple[str, int]] = "coverage", organs: list[str] | None = None,
                       n_slices: int = 2, logs: dict[str, Path] | None = None, summary_csv: Path | None = None,
                       device: str = "cpu", runs: dict[str, dict] | None = None) -> list[Path]:
    """Write the study figures into ``out_dir``; returns the written paths.

    ``models`` maps display names to checkpoints (in display order). Attributions are computed for
    ``organs`` (default: the largest few organs in the chosen slices) wherever the organ is in the
    ground truth (the organ's outline is drawn over the maps).
    ``logs`` maps run names (``METHOD_wWIDTH_sSEED`` or ``teacher``, every seed) to ``log.csv`` files for
    the training curves and the gradient ratios; ``runs`` describes each name of ``models`` and ``logs``
    (model, method, width, seed; default: read from the name by :func:`hkd.figures.runs.describe`).
    ``summary_csv`` has columns method, params, dice_mean, dice_std, with the teacher as the row whose
    method is 'teacher'. The files written are those of :data:`hkd.figures.FIGURES`.
    """
    prepared, out_dir = Path(prepared), Path(out_dir)
    if not models:
        raise ValueError("make_study_figures needs at least one model")
    meta = read_meta(prepared)
    classes = meta["classes"]
    n_classes = len(classes)
    data = load_slices(prepared, "val")
    lo, hi = meta.get("scale", (0.0, 1.0))
    wanted = resolve_organs(organs, classes)
    rows = select_slices(data, slice_selection, n_slices, n_classes, wanted)
    if not rows:
        raise ValueError("no validation slices selected")
    images = data.image[rows]
    truths = data.label[rows].numpy()
    where = [(data.case[r], int(data.index[r])) for r in rows]
    if wanted is None:
        area = class_counts(truths, n_classes).sum(0)
        wanted = [int(c) for c in np.argsort(-area[1:], kind="stable") + 1 if area[c] > 0][:MAX_DEFAULT_ORGANS]
    targets = [(i, c) for i in range(len(rows)) for c in wanted if (truths[i] == c).any()]
    if not targets:
        raise ValueError(f"none of the organs {[classes[c] for c in wanted]} is in the selected slices")

    dev = torch.device(device)
    loaded, specs = {}, {}
    for name, path in models.items():
        model, specs[name] = load_model(path)
        loaded[name] = model.to(dev)
    predictions = {name: _predict(m, images, dev) for name, m in loaded.items()}
    seeds = _seeds_note(models, runs)
    shown = ((images[:, 0] - lo) / (hi - lo)).numpy()  # the grey scale of the figures is [0, 1]
    outputs = [prediction_overlays(figure_path(out_dir, "overlays"), shown, truths, predictions, classes,
                                   row_labels=[f"case {c}, slice {s}" for c, s in where],
                                   title="validation slices" + (f"; {seeds}" if seeds else ""))]

    columns = {(i, c): f"{classes[c]}\ncase {where[i][0]}, slice {where[i][1]}" for i, c in targets}
    notes = {name: {columns[i, c]: f"predicts no {classes[c]}: whole-slice score"
                    for i, c in targets if not (predictions[name][i] == c).any()} for name in loaded}
    backdrops = {columns[i, c]: shown[i] for i, c in targets}
    outlines = {columns[i, c]: truths[i] == c for i, c in targets}
    sal, cam = {}, {}
    for name, model in loaded.items():
        sal[name], cam[name] = {}, {}
        for i, c in targets:
            x = images[i:i + 1]
            sal[name][columns[i, c]] = saliency(model, x, c)
            cam[name][columns[i, c]] = gradcam(model, x, c, gradcam_layer(specs[name]))
    kind = "Saliency" + (f" ({seeds})" if seeds else "")
    outputs.append(attribution_grid(figure_path(out_dir, "saliency"), backdrops, sal, kind, outlines=outlines, notes=notes,
                                    blank_note="zero map"))
    kind = "Grad-CAM" + (f" ({seeds})" if seeds else "")
    outputs.append(attribution_grid(figure_path(out_dir, "gradcam"), backdrops, cam, kind, outlines=outlines, notes=notes,
                                    blank_note="zero map: no positive evidence"))

    latent_rows = select_slices(data, "coverage", LATENT_SLICES, n_classes)
    latent_images, latent_truths = data.image[latent_rows], data.label[latent_rows].numpy()
    latents, organ_labels, cells = {}, {}, set()
    for name, model in loaded.items():
        latents[name], grid = _latent_vectors(recorder_of(model, specs[name], name), latent_images, dev)
        organ_labels[name] = cell_organs(latent_truths, grid, n_classes, LATENT_MIN_SHARE)
        cells.add(f"{latent_truths.shape[1] // grid[0]}x{latent_truths.shape[2] // grid[1]}")
    note = (f"a point: one latent position of one of {len(latent_rows)} validation slices "
            f"({len({data.case[r] for r in latent_rows})} cases), i.e. a {' or '.join(sorted(cells))}-pixel cell, "
            f"coloured by the organ covering most of the cell if at least {LATENT_MIN_SHARE:.0%} of it, else grey")
    outputs.append(latent_pca(figure_path(out_dir, "latent_pca"), latents, organ_labels, classes, note=note))

    if logs:
        tables = {run: pd.read_csv(path) for run, path in logs.items()}
        outputs.append(training_curves(figure_path(out_dir, "training_curves"), tables, runs=runs))
        outputs.append(gradient_ratios(figure_path(out_dir, "grad_ratios"), tables, runs=runs))
    if summary_csv is not None:
        table = pd.read_csv(summary_csv)
        is_teacher = table["method"].astype(str).eq("teacher") if "method" in table else None
        teacher = None
        if is_teacher is not None and is_teacher.any():
            teacher = float(table.loc[is_teacher, "dice_mean"].mean())
            table = table.loc[~is_teacher]
        outputs.append(dice_vs_params(figure_path(out_dir, "dice_vs_params"), table, teacher))
    return outputs
