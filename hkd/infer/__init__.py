"""A trained model applied to a volume, one way for every caller (evaluation, predict, export, cost).

- :mod:`hkd.infer.preprocessing`: what a checkpoint records of the data its model was trained on.
- :mod:`hkd.infer.runtime`: a checkpoint (PyTorch) or an exported ONNX file (ONNX Runtime) as one callable,
  slices in, logits out.
- :mod:`hkd.infer.grid`: a scan's slices prepared for the model, and the model's outputs back on the scan's grid.
- :mod:`hkd.infer.segment`: a volume segmented batch by batch through the two.
"""
