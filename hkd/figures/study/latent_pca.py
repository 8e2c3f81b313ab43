"""A 2-component PCA of each model's latent vectors on the best-covered validation slices."""

from __future__ import annotations

from pathlib import Path

import torch

from hkd.figures.catalog import Figure
from hkd.figures.latent import latent_pca
from hkd.figures.slices import cell_organs
from hkd.models import FeatureRecorder, recorder_of

FIGURE = Figure(function="draw", inputs=("models", "latent_slices"), caption="latent_pca.rst")
MIN_SHARE = 0.1  # share of a latent cell an organ must cover to label the cell


@torch.no_grad()
def latent_vectors(features: FeatureRecorder, images: torch.Tensor, device: torch.device, batch: int = 32):
    """Per-position latent vectors (R*h*w, C) and the latent grid (h, w)."""
    zs = [features(images[i:i + batch].to(device), ["bottleneck"])["bottleneck"].float().cpu()
          for i in range(0, len(images), batch)]
    z = torch.cat(zs)
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).numpy(), tuple(z.shape[-2:])


def draw(context, out_png: str | Path) -> Path:
    """Points coloured by the organ of their cell (:func:`hkd.figures.slices.cell_organs`)."""
    data, rows = context.data, context.latent_rows
    images, truths = data.image[rows], data.label[rows].numpy()
    latents, organ_labels, cells = {}, {}, set()
    for name, (model, spec) in context.loaded.items():
        latents[name], grid = latent_vectors(recorder_of(model, spec, name), images, context.device)
        organ_labels[name] = cell_organs(truths, grid, context.n_classes, MIN_SHARE)
        cells.add(f"{truths.shape[1] // grid[0]}x{truths.shape[2] // grid[1]}")
    note = (f"a point: one latent position of one of {len(rows)} validation slices "
            f"({len({data.case[r] for r in rows})} cases), i.e. a {' or '.join(sorted(cells))}-pixel cell, "
            f"coloured by the organ covering most of the cell if at least {MIN_SHARE:.0%} of it, else grey")
    return latent_pca(out_png, latents, organ_labels, context.classes, note=note)
