"""Training: segmentation loss, augmentation and the reproducible, resumable trainer."""
