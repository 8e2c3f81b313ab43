"""The trained model as a deliverable: segmenting new scans, export and cost (on :mod:`hkd.infer`).

- :mod:`hkd.deploy.predict`: ``hkd predict``, NIfTI in, a label volume on the input's own grid out.
- :mod:`hkd.deploy.export`: ``hkd export``, the network alone as ONNX, checked against ONNX Runtime.
- :mod:`hkd.deploy.cost`: ``hkd cost``, parameters, FLOPs, file size, latency and memory per model.
"""
