"""The SqueezeUNet's inference form (hkd.models.squeezeunet_inference): the trained network's function,
without concatenations, and what export writes."""

from __future__ import annotations

import pytest
import torch

from hkd.models import build_model
from hkd.models.inference import inference_network
from hkd.models.squeezeunet_inference import ConcatFreeSqueezeUNet


def _trained_like(spec: dict, seed: int = 0) -> torch.nn.Module:
    """A network whose biases are not zero (He's init zeroes them; the bias's way through the upsampling matters)."""
    torch.manual_seed(seed)
    network = build_model(spec).eval()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.bias.normal_(0, 0.1)
    return network


@pytest.mark.parametrize("width,shape", [("0.4M", (48, 48)), (1.5, (64, 80)), (0.3, (32, 48))])
def test_the_inference_form_computes_the_networks_function(width, shape):
    spec = {"arch": "squeezeunet", "width": width, "num_classes": 5, "in_channels": 2}
    network = _trained_like(spec)
    fast = inference_network(network, spec)
    assert isinstance(fast, ConcatFreeSqueezeUNet)
    x = torch.rand(3, 2, *shape)
    with torch.no_grad():
        want, got = network(x), fast(x)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_the_inference_form_follows_the_weights_it_was_made_from_and_leaves_the_network_alone():
    spec = {"arch": "squeezeunet", "width": "0.4M", "num_classes": 9}
    network = _trained_like(spec)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    fast = inference_network(network, spec)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        other = _trained_like(spec, seed=1)
        assert (inference_network(other, spec)(x) - fast(x)).abs().max() > 1e-3  # not a function of the shape
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())
    assert type(network.decoder[0]).__name__ == "FireModule"


def test_other_architectures_export_as_built():
    spec = {"arch": "transunet", "img_size": 32, "hidden_size": 16, "num_layers": 1, "num_heads": 2, "mlp_dim": 32,
            "block_units": [1, 1, 1], "resnet_width": 8, "decoder_channels": [16, 8, 8, 4], "num_classes": 3}
    network = build_model(spec)
    assert inference_network(network, spec) is network


def test_the_exported_student_has_no_concatenation_and_matches_the_network():
    import onnxruntime as ort

    from hkd.deploy.export import to_onnx

    spec = {"arch": "squeezeunet", "width": "0.4M", "num_classes": 9}
    network = _trained_like(spec)
    proto, dynamic = to_onnx(network, 48, spec)
    ops = {node.op_type for node in proto.graph.node}
    assert "Concat" not in ops and "Conv" in ops and dynamic
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in ((2, 1, 48, 48), (1, 1, 64, 96)):
        x = torch.rand(*shape)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            assert abs(got - network(x).numpy()).max() < 1e-4


def test_an_edited_inference_form_reruns_exports_not_trainings():
    """The jobs' code is read from their imports: the inference forms are the export's and the cost table's
    code, never a training's (a training job that listed them would train again for an edit that changes no
    weight)."""
    from hkd.workflow_deps import command_modules

    from helpers import REPO

    forms = {"hkd/models/inference.py", "hkd/models/squeezeunet_inference.py"}
    for command in ("export", "cost"):
        assert forms <= set(command_modules(command, REPO)), command
    for command, loads in (("train", ["hkd.distill.logits"]), ("train-cohort", ["hkd.distill.latent"]),
                           ("evaluate", []), ("predict", [])):
        assert not forms & set(command_modules(command, REPO, loads)), command
