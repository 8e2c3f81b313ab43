"""Data layer: sources (phantom, Synapse, imports), validation, preprocessing, split, datasets."""
