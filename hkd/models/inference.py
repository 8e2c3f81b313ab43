"""Each architecture's form for inference: the trained network's function computed faster, what
:func:`hkd.deploy.export.to_onnx` exports.

Kept apart from the architecture registry (``hkd/models/__init__.py``), which every training job imports: the
workflow reads a job's code from its imports (``hkd/workflow_deps.py``), so editing an inference form reruns
the exports and the cost table that run it, never a training.
"""

from __future__ import annotations

from torch import nn

from hkd.models.squeezeunet_inference import ConcatFreeSqueezeUNet

#: Architecture name (a spec's ``arch``) -> its inference form (trained network -> module).
FORMS = {"squeezeunet": ConcatFreeSqueezeUNet}


def inference_network(network: nn.Module, spec: dict) -> nn.Module:
    """The network in its architecture's form for inference (the same function, faster), else itself."""
    form = FORMS.get(str(spec.get("arch", "")).lower())
    return form(network).eval() if form else network
