"""The trained model as a deliverable: its preprocessing, segmenting new scans, export and cost.

- :mod:`hkd.deploy.preprocessing`: what a checkpoint records of the data its model was trained on.
- :mod:`hkd.deploy.runtime`: a checkpoint or an exported ONNX file as one callable, slices in, logits out.
- :mod:`hkd.deploy.predict`: ``hkd predict``, NIfTI in, a label volume on the input's own grid out.
- :mod:`hkd.deploy.export`: ``hkd export``, the network alone as ONNX, checked against ONNX Runtime.
- :mod:`hkd.deploy.cost`: ``hkd cost``, parameters, FLOPs, file size, latency and memory per model.
"""
