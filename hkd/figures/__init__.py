"""Study figures, each written as a PNG of a fixed pixel size (``size`` inches times ``dpi``).

:data:`FIGURES` lists them: the file name, the function that draws it and its caption in the report.
``hkd figures`` (:func:`hkd.figures.make.make_study_figures`) writes them and the workflow's figures
rule declares them from this one list. This module imports nothing (the workflow reads it when it
parses the configuration).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    name: str  # written as <name>.png
    function: str  # the function of hkd.figures that draws it
    caption: str  # its caption, workflow/report/<caption>


FIGURES = (
    Figure("overlays", "overlays.prediction_overlays", "overlays.rst"),
    Figure("saliency", "attributions.attribution_grid", "saliency.rst"),
    Figure("gradcam", "attributions.attribution_grid", "gradcam.rst"),
    Figure("latent_pca", "latent.latent_pca", "latent_pca.rst"),
    Figure("training_curves", "curves.training_curves", "training_curves.rst"),
    Figure("grad_ratios", "gradients.gradient_ratios", "grad_ratios.rst"),
    Figure("dice_vs_params", "scaling.dice_vs_params", "dice_vs_params.rst"),
)
NAMES = tuple(f.name for f in FIGURES)


def figure_path(out_dir: str | Path, name: str) -> Path:
    """Where figure ``name`` (one of :data:`FIGURES`) is written in ``out_dir``."""
    if name not in NAMES:
        raise ValueError(f"unknown figure '{name}'; the study's figures: {', '.join(NAMES)}")
    return Path(out_dir) / f"{name}.png"
