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

#: Architecture name -> the parts of its inference form (parameter-name prefixes) whose convolutions ``hkd export
#: --int8`` keeps in float. SqueezeUNet's decoder and head: the network carries a rounding difference made early
#: on into ever larger logit differences on the way up (two int8 computations differing only in ties and
#: summation order agree to 1e-5 after the first convolution and differ by 0.15 on average in the logits).
#: Measured on the default study's students over three calibration draws, validation cases: every convolution
#: int8 changed the mean Dice by -0.0026 to -0.0112 (x1.5) and -0.0006 to -0.0049 (0.4M), the decoder and head
#: kept float by -0.0009 to -0.0017 and -0.0015 to +0.0003; keeping the last decoder block and head, or the head
#: alone, did not hold across draws.
INT8_FLOAT_PARTS = {"squeezeunet": ("decoder.", "head.")}


def inference_network(network: nn.Module, spec: dict) -> nn.Module:
    """The network in its architecture's form for inference (the same function, faster), else itself."""
    form = FORMS.get(str(spec.get("arch", "")).lower())
    return form(network).eval() if form else network


def int8_float_parts(spec: dict) -> tuple[str, ...]:
    """The parameter-name prefixes of the convolutions ``--int8`` keeps in float (:data:`INT8_FLOAT_PARTS`)."""
    return INT8_FLOAT_PARTS.get(str(spec.get("arch", "")).lower(), ())
