"""Study figures, each written as a PNG of a fixed pixel size (``size`` inches times ``dpi``)."""

from hkd.figures.attributions import attribution_grid
from hkd.figures.curves import training_curves
from hkd.figures.gradients import gradient_ratios
from hkd.figures.latent import latent_pca, pca_2d
from hkd.figures.overlays import prediction_overlays
from hkd.figures.scaling import dice_vs_params

__all__ = ["attribution_grid", "dice_vs_params", "gradient_ratios", "latent_pca", "pca_2d", "prediction_overlays",
           "training_curves"]
