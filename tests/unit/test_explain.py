"""Attribution maps: shapes, ranges, edge cases, and the outside-the-organ mass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hkd.explain import gradcam, outside_mass, saliency
from hkd.models import build_model, gradcam_layer

TEACHER = {"arch": "transunet", "img_size": 32, "num_classes": 9, "hidden_size": 48, "num_layers": 1,
           "num_heads": 4, "mlp_dim": 96, "block_units": [1, 1, 1], "resnet_width": 8,
           "decoder_channels": [16, 16, 8, 8], "latent_channels": 16}
STUDENT = {"arch": "squeezeunet", "width": 0.25, "num_classes": 9}


def _model(spec, seed=0):
    torch.manual_seed(seed)
    return build_model(spec).eval()


def _image(seed=0):
    return torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("spec", [TEACHER, STUDENT], ids=["teacher", "student"])
def test_maps_have_image_shape_and_valid_values(spec):
    model = _model(spec)
    s = saliency(model, _image(), 3)
    g = gradcam(model, _image(), 3, gradcam_layer(spec))
    for m in (s, g):
        assert m.shape == (32, 32) and np.isfinite(m).all() and (m >= 0).all()
    assert s.max() > 0
    assert g.max() <= 1.0 and g.max() in (0.0, 1.0)


@pytest.mark.parametrize("spec", [TEACHER, STUDENT], ids=["teacher", "student"])
def test_gradcam_depends_on_the_input(spec):
    model = _model(spec)
    layer = gradcam_layer(spec)
    a, b = gradcam(model, _image(0), 1, layer), gradcam(model, _image(1), 1, layer)
    assert a.max() == 1.0 and not np.allclose(a, b)
    np.testing.assert_array_equal(a, gradcam(model, _image(0), 1, layer))  # deterministic


def test_gradcam_at_a_coarser_layer_is_upsampled():
    model = _model(STUDENT)
    g = gradcam(model, _image(), 1, layer="decoder.0")  # 1/8 resolution
    assert g.shape == (32, 32) and np.isfinite(g).all() and g.min() >= 0


def test_zero_gradients_give_all_zero_maps():
    model = _model(STUDENT)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    s, g = saliency(model, _image(), 4), gradcam(model, _image(), 4, gradcam_layer(STUDENT))
    assert np.all(s == 0) and np.all(g == 0)


def test_class_the_model_never_predicts_falls_back_to_all_pixels():
    model = _model(STUDENT)
    with torch.no_grad():
        model.head.bias[0] = 1e3  # everything is background
    assert model(_image()).argmax(1).eq(0).all()
    assert saliency(model, _image(), 5).max() > 0


def test_training_mode_is_restored_and_bad_class_rejected():
    model = _model(STUDENT).train()
    saliency(model, _image(), 1)
    assert model.training
    with pytest.raises(ValueError):
        gradcam(model, _image(), 9, gradcam_layer(STUDENT))
    with pytest.raises(ValueError):
        saliency(model, torch.zeros(2, 1, 32, 32), 1)


def test_outside_mass_known_answers():
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    inside = np.where(mask, 1.0, 0.0)
    assert outside_mass(inside, mask, 0) == 0.0
    assert outside_mass(np.ones((10, 10)), mask, 0) == pytest.approx(0.5)
    assert outside_mass(1.0 - inside, mask, 0) == 1.0
    assert np.isnan(outside_mass(np.zeros((10, 10)), mask, 2))


def test_outside_mass_dilation_counts_the_margin_as_inside():
    mask = np.zeros((11, 11), bool)
    mask[5, 5] = True
    point = np.zeros((11, 11))
    point[5, 8] = 2.0  # 3 pixels right of the organ
    assert outside_mass(point, mask, 2) == 1.0
    assert outside_mass(point, mask, 3) == 0.0
    diagonal = np.zeros((11, 11))
    diagonal[7, 7] = 1.0  # sqrt(8) ~ 2.83 away: inside a disk of radius 3, outside radius 2
    assert outside_mass(diagonal, mask, 2) == 1.0 and outside_mass(diagonal, mask, 3) == 0.0
    with pytest.raises(ValueError):
        outside_mass(point, mask[:5], 1)
