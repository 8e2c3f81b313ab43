"""Attribution maps for segmentation models (input saliency, Grad-CAM) and how far they reach."""

from hkd.explain.attribution import gradcam, outside_mass, saliency

__all__ = ["gradcam", "outside_mass", "saliency"]
