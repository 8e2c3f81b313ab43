"""Teacher/student architectures: parameter counts, shapes, feature interface, ViT npz loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hkd.models import (SQUEEZEUNET_PRESETS, CheckpointError, SqueezeUNet, TransUNet, build_model, count_parameters,
                        gradcam_layer, load_vit_npz, recorder_of)
from hkd.models.recorder import FeatureError

STUDENT = {"arch": "squeezeunet"}

SMALL_TEACHER = dict(arch="transunet", img_size=64, num_classes=9, hidden_size=96, num_layers=2, num_heads=4,
                     mlp_dim=192, block_units=(1, 1, 1), resnet_width=16, decoder_channels=(64, 32, 16, 8),
                     latent_channels=64)


def small_teacher(**overrides) -> TransUNet:
    return build_model({**SMALL_TEACHER, **overrides})


# ---------------------------------------------------------------------------------------- counts

def test_transunet_paper_parameter_counts():
    model = build_model({"arch": "transunet", "img_size": 224, "num_classes": 9, "in_channels": 1})
    assert count_parameters(model) == 105_277_081
    assert count_parameters(model.resnet) == 11_894_848
    assert count_parameters(model.embeddings) + count_parameters(model.encoder) == 85_993_728
    assert count_parameters(model.decoder) == 7_387_200
    assert count_parameters(model.head) == 1_305
    assert model.embeddings.position_embeddings.shape == (1, 196, 768)


def test_squeezeunet_width_one_parameter_count():
    model = build_model({"arch": "squeezeunet", "width": 1.0, "num_classes": 9, "in_channels": 1})
    assert count_parameters(model) == 423_961
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


# reported sizes; "0.4M" is the name of the 423,961-parameter width-1 model
@pytest.mark.parametrize("preset,target", [("0.4M", 423_961), ("4M", 4.04e6), ("6.7M", 6.76e6), ("16M", 16.19e6)])
def test_squeezeunet_presets_within_two_percent(preset, target):
    n = count_parameters(build_model({"arch": "squeezeunet", "width": preset, "num_classes": 9, "in_channels": 1}))
    assert abs(n - target) / target < 0.02
    assert set(SQUEEZEUNET_PRESETS) == {"0.4M", "4M", "6.7M", "16M"}


def test_count_parameters_ignores_frozen():
    model = SqueezeUNet(width=0.25)
    total = count_parameters(model)
    model.head.weight.requires_grad_(False)
    assert count_parameters(model) == total - model.head.weight.numel()


@pytest.mark.parametrize("arch_spec", [SMALL_TEACHER, {"arch": "squeezeunet", "width": "4M"}])
def test_construction_is_deterministic_under_seed(arch_spec):
    torch.manual_seed(123)
    a = build_model(arch_spec).state_dict()
    torch.manual_seed(123)
    b = build_model(arch_spec).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("width", [1.0, 0.25, 0.5, 3.1, 0.33])
@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
def test_squeezeunet_output_shape(width, size):
    model = SqueezeUNet(num_classes=5, in_channels=1, width=width)
    assert model(torch.randn(2, 1, *size)).shape == (2, 5, *size)


@pytest.mark.parametrize("size", [(64, 64), (32, 32), (48, 80)])
def test_small_transunet_output_shape(size):
    model = small_teacher().eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, *size)).shape == (2, 9, *size)


@pytest.mark.parametrize("n_skip", [0, 1])
def test_transunet_fewer_skips(n_skip):
    model = small_teacher(n_skip=n_skip).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 9, 32, 32)


def test_transunet_three_channel_input_and_repeat():
    model = small_teacher(in_channels=3).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        out3 = model(x.repeat(1, 3, 1, 1))
        gray = small_teacher().eval()
        gray.load_state_dict(model.state_dict())
        assert torch.allclose(gray(x), out3, atol=1e-5)


def test_sizes_not_divisible_by_16_are_rejected():
    with pytest.raises(ValueError, match="divisible by 16"):
        SqueezeUNet(width=0.25)(torch.randn(1, 1, 40, 40))
    with pytest.raises(ValueError, match="divisible by 16"):
        small_teacher()(torch.randn(1, 1, 72, 64))
    with pytest.raises(ValueError, match="expected input"):
        SqueezeUNet(width=0.25)(torch.randn(1, 3, 32, 32))


def test_squeezeunet_he_init_carries_the_signal_to_the_bottleneck():
    """Without batch norm, PyTorch's default init shrinks the signal at every convolution; He's keeps it."""
    x = torch.rand(4, 1, 48, 48)
    ratios = {}
    for init in ("he", "torch"):
        torch.manual_seed(0)
        with torch.no_grad():
            spec = {"arch": "squeezeunet", "width": "0.4M", "init": init}
            feats = recorder_of(build_model(spec), spec)(x)
        ratios[init] = float(feats["bottleneck"].std() / feats["enc_s1"].std())
    assert ratios["he"] > 0.5 > ratios["torch"]
    assert all(float(m.bias.abs().max()) == 0 for m in SqueezeUNet(width=0.5).modules()
               if isinstance(m, nn.Conv2d) and m.out_channels != 9)
    with pytest.raises(ValueError, match="unknown SqueezeUNet init 'xavier'"):
        SqueezeUNet(init="xavier")


# ------------------------------------------------------------------------------------- features

def test_squeezeunet_features():
    w = 0.5
    model = SqueezeUNet(num_classes=9, width=w).eval()
    x = torch.randn(2, 1, 64, 96)
    feats = recorder_of(model, STUDENT)(x)
    c = lambda n: int(n * w)  # noqa: E731
    expected = {"enc_s1": (c(32), 64, 96), "enc_s2": (c(64), 32, 48), "enc_s4": (c(128), 16, 24),
                "enc_s8": (c(256), 8, 12), "bottleneck": (c(512), 4, 6), "dec_s8": (c(256), 8, 12),
                "dec_s4": (c(128), 16, 24), "dec_s2": (c(64), 32, 48), "dec_s1": (c(32), 64, 96),
                "logits": (9, 64, 96)}
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == expected
    assert list(feats) == list(expected)  # forward order
    assert torch.equal(feats["logits"], model(x))


def test_squeezeunet_width_one_latent_matches_teacher_latent():
    x = torch.randn(1, 1, 224, 224)
    with torch.no_grad():
        assert recorder_of(SqueezeUNet(), STUDENT)(x, ["bottleneck"])["bottleneck"].shape == (1, 512, 14, 14)


def test_transunet_features():
    model = small_teacher().eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        feats = recorder_of(model, SMALL_TEACHER)(x)
        logits = model(x)
    expected = {"enc_s2": (16, 32, 32), "enc_s4": (64, 16, 16), "enc_s8": (128, 8, 8), "enc_s16": (256, 4, 4),
                "vit": (96, 4, 4), "bottleneck": (64, 4, 4), "dec_s8": (64, 8, 8), "dec_s4": (32, 16, 16),
                "dec_s2": (16, 32, 32), "dec_s1": (8, 64, 64), "logits": (9, 64, 64)}
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == expected
    assert list(feats) == list(expected)
    assert torch.allclose(feats["logits"], logits)


def test_feature_names_say_the_stride_and_grids_are_anchored_as_the_layers_compute():
    teacher = recorder_of(small_teacher(), SMALL_TEACHER).describe(64)
    student = recorder_of(SqueezeUNet(width=0.25), STUDENT).describe(64)
    for specs in (teacher, student):
        for name, f in specs.items():
            if name.startswith(("enc_s", "dec_s")):
                assert f.stride == int(name.split("_s")[1]), name
    # TransUNet: stride-2 'same' convs and the padded pool put cell i at stride*i + 0.5 (top-left);
    # SqueezeUNet: unpadded 2x2 pools put it at stride*(i + 0.5) (centred).
    assert teacher["bottleneck"].offset == 0.5
    assert student["bottleneck"].offset == 8.0


def test_transunet_grid_offset_follows_its_strided_convolutions():
    """Input pixel (r, c) reaches cell i of the 7x7/2 root conv (padding 3) only if |r - 2i| <= 3, and the
    padded 3x3/2 pool after it reads root cells 2j-1..2j+1: both centre cell i at stride*i + 0.5 in
    continuous coordinates, the declared offset (GroupNorm mixes all positions, so the layers are probed
    without it)."""
    model = small_teacher().eval()
    specs = recorder_of(model, SMALL_TEACHER).describe(64)

    def support_centre(fn, i):
        x = torch.randn(1, 3, 64, 64, requires_grad=True)
        fn(x)[0, :, i, i].sum().backward()
        rows = torch.nonzero(x.grad[0].abs().sum((0, 2))).flatten()
        return (rows.min() + rows.max()).item() / 2 + 0.5

    root = model.resnet.conv_root
    assert support_centre(root, 10) == specs["enc_s2"].stride * 10 + specs["enc_s2"].offset
    # the model's padded 3x3/2 max pool has the window geometry of this average pool (every cell counts)
    pooled = lambda x: torch.nn.functional.avg_pool2d(root(x), 3, stride=2, padding=1)  # noqa: E731
    assert support_centre(pooled, 5) == specs["enc_s4"].stride * 5 + specs["enc_s4"].offset


def test_dropout_after_the_attention_projection_is_the_attention_rate_as_published():
    model = TransUNet(img_size=32, hidden_size=48, num_layers=1, num_heads=4, mlp_dim=96, block_units=(1, 1, 1),
                      resnet_width=8)
    attn = model.encoder.layer[0].attn
    assert attn.proj_dropout.p == 0.0 and attn.attention_dropout == 0.0
    assert model.encoder.layer[0].ffn.dropout.p == 0.1 and model.embeddings.dropout.p == 0.1
    assert TransUNet(img_size=32, hidden_size=48, num_layers=1, num_heads=4, mlp_dim=96, block_units=(1, 1, 1),
                     resnet_width=8, attention_dropout=0.2).encoder.layer[0].attn.proj_dropout.p == 0.2


def test_paper_transunet_feature_channels_without_forward():
    model = TransUNet()
    assert model.resnet.skip_channels == [512, 256, 64]
    assert model.decoder.conv_more[0].out_channels == 512
    assert [b.conv2[0].out_channels for b in model.decoder.blocks] == [256, 128, 64, 16]


def test_feature_subset_stops_early_and_unknown_names_are_named():
    model = small_teacher().eval()
    ran = []
    model.head.register_forward_hook(lambda m, i, o: ran.append("head"))
    with torch.no_grad():
        feats = recorder_of(model, SMALL_TEACHER)(torch.randn(1, 1, 64, 64), names=["bottleneck", "enc_s4"])
    assert list(feats) == ["enc_s4", "bottleneck"] and ran == []  # the decoder never ran
    with pytest.raises(FeatureError, match="records no feature 'vit'.*enc_s1"):
        recorder_of(SqueezeUNet(width=0.25), STUDENT, "student")(torch.randn(1, 1, 32, 32), names=["vit"])


def test_recorder_refuses_what_is_not_a_feature():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stages = nn.ModuleList([nn.Conv2d(1, 4, 3, padding=1)])
            self.act = nn.ReLU(inplace=True)
            self.head = nn.Conv2d(4, 2, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            y = self.stages[0](x)
            self.pool(y)
            return self.head(self.act(y))

    net = Net()
    x = torch.randn(1, 1, 16, 16)
    with pytest.raises(FeatureError, match="'stages' did not run.*ModuleList"):
        FeatureRecorderOf(net, {"enc_s1": "stages"})(x)
    with pytest.raises(FeatureError, match="'stages.0' .*changed in place"):
        FeatureRecorderOf(net, {"enc_s1": "stages.0"})(x)
    with pytest.raises(FeatureError, match="feature 'enc_s1' names module 'stage.0'.*close: stages.0"):
        FeatureRecorderOf(net, {"enc_s1": "stage.0"})
    assert FeatureRecorderOf(net, {"pooled": "pool"}).describe(16)["pooled"].stride == 16


def FeatureRecorderOf(net, features):  # noqa: N802 - reads as the class it builds
    from hkd.models.recorder import FeatureRecorder
    return FeatureRecorder(net, features, label="net")


def test_gradcam_layer_names_last_decoder_block():
    for spec in (SMALL_TEACHER, {"arch": "squeezeunet", "width": 0.25}):
        model = build_model(spec)
        layer = model.get_submodule(gradcam_layer(spec))
        out = {}
        handle = layer.register_forward_hook(lambda m, i, o: out.setdefault("y", o))
        feats = recorder_of(model, spec)(torch.randn(1, 1, 64, 64))
        handle.remove()
        assert torch.equal(out["y"], feats["dec_s1"])


def test_build_model_errors_and_list_values():
    with pytest.raises(ValueError, match="unknown model arch"):
        build_model({"arch": "unet"})
    with pytest.raises(ValueError, match="bad transunet spec"):
        build_model({"arch": "transunet", "hidden": 3})
    with pytest.raises(ValueError, match="width"):
        build_model({"arch": "squeezeunet", "width": "5M"})
    model = build_model({**SMALL_TEACHER, "block_units": [1, 1, 1]})
    assert model.config["block_units"] == (1, 1, 1)


def test_backward_reaches_every_parameter():
    for model in (small_teacher(dropout=0.0), SqueezeUNet(width=0.25)):
        model(torch.randn(2, 1, 32, 32)).square().mean().backward()
        assert all(p.grad is not None for p in model.parameters())


# ------------------------------------------------------------------------------------ npz weights

def fake_vit_npz(path, model: TransUNet, with_class_token=True, grid=None, extra=None, drop=None):
    """Random weights laid out like Google's R50+ViT-B_16.npz, for ``model``'s configuration."""
    cfg = model.config
    rng = np.random.default_rng(0)
    d, heads, mlp, w = cfg["hidden_size"], cfg["num_heads"], cfg["mlp_dim"], cfg["resnet_width"]
    r = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    g = grid or cfg["img_size"] // 16
    arrays = {"embedding/kernel": r(1, 1, 16 * w, d), "embedding/bias": r(d),
              "Transformer/posembed_input/pos_embedding": r(1, g * g + int(with_class_token), d),
              "Transformer/encoder_norm/scale": r(d), "Transformer/encoder_norm/bias": r(d),
              "cls": r(1, 1, d), "head/kernel": r(d, 10), "head/bias": r(10),
              "conv_root/kernel": r(7, 7, 3, w), "gn_root/scale": r(w), "gn_root/bias": r(w)}
    for i in range(cfg["num_layers"]):
        p = f"Transformer/encoderblock_{i}/"
        for name in ("query", "key", "value"):
            arrays[p + f"MultiHeadDotProductAttention_1/{name}/kernel"] = r(d, heads, d // heads)
            arrays[p + f"MultiHeadDotProductAttention_1/{name}/bias"] = r(heads, d // heads)
        arrays[p + "MultiHeadDotProductAttention_1/out/kernel"] = r(heads, d // heads, d)
        arrays[p + "MultiHeadDotProductAttention_1/out/bias"] = r(d)
        arrays[p + "MlpBlock_3/Dense_0/kernel"] = r(d, mlp)
        arrays[p + "MlpBlock_3/Dense_0/bias"] = r(mlp)
        arrays[p + "MlpBlock_3/Dense_1/kernel"] = r(mlp, d)
        arrays[p + "MlpBlock_3/Dense_1/bias"] = r(d)
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            arrays[p + f"{ln}/scale"], arrays[p + f"{ln}/bias"] = r(d), r(d)
    cin = w
    for b, units in enumerate(cfg["block_units"]):
        cout, cmid = 4 * w * 2**b, w * 2**b
        for u in range(units):
            p = f"block{b + 1}/unit{u + 1}/"
            arrays[p + "conv1/kernel"] = r(1, 1, cin if u == 0 else cout, cmid)
            arrays[p + "conv2/kernel"] = r(3, 3, cmid, cmid)
            arrays[p + "conv3/kernel"] = r(1, 1, cmid, cout)
            for gn, c in (("gn1", cmid), ("gn2", cmid), ("gn3", cout)):
                arrays[p + f"{gn}/scale"], arrays[p + f"{gn}/bias"] = r(c), r(c)
            if u == 0:
                arrays[p + "conv_proj/kernel"] = r(1, 1, cin, cout)
                arrays[p + "gn_proj/scale"], arrays[p + "gn_proj/bias"] = r(cout), r(cout)
        cin = cout
    arrays.update(extra or {})
    for key in drop or ():
        del arrays[key]
    np.savez(path, **arrays)
    return arrays


def test_load_vit_npz_maps_and_transposes(tmp_path):
    model = small_teacher()
    arrays = fake_vit_npz(tmp_path / "vit.npz", model)
    decoder_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    load_vit_npz(model, tmp_path / "vit.npz")
    q = arrays["Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel"]
    assert torch.equal(model.encoder.layer[1].attn.query.weight, torch.from_numpy(q.reshape(96, 96).T))
    out = arrays["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel"]
    assert torch.equal(model.encoder.layer[0].attn.out.weight, torch.from_numpy(out.reshape(96, 96).T))
    fc1 = arrays["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"]
    assert torch.equal(model.encoder.layer[0].ffn.fc1.weight, torch.from_numpy(fc1.T))
    conv2 = arrays["block2/unit1/conv2/kernel"]
    assert torch.equal(model.resnet.body.block2.unit1.conv2.weight, torch.from_numpy(conv2.transpose(3, 2, 0, 1)))
    assert torch.equal(model.resnet.conv_root.weight,
                       torch.from_numpy(arrays["conv_root/kernel"].transpose(3, 2, 0, 1)))
    assert torch.equal(model.resnet.body.block3.unit1.gn_proj.weight,
                       torch.from_numpy(arrays["block3/unit1/gn_proj/scale"]))
    assert torch.equal(model.encoder.encoder_norm.bias, torch.from_numpy(arrays["Transformer/encoder_norm/bias"]))
    pos = arrays["Transformer/posembed_input/pos_embedding"]
    assert torch.equal(model.embeddings.position_embeddings, torch.from_numpy(pos[:, 1:]))  # class token dropped
    assert all(torch.equal(v, decoder_before[k]) for k, v in model.decoder.state_dict().items())


def test_load_vit_npz_resizes_position_grid(tmp_path):
    model = small_teacher()
    arrays = fake_vit_npz(tmp_path / "vit.npz", model, grid=2)
    load_vit_npz(model, tmp_path / "vit.npz")
    pos = model.embeddings.position_embeddings.detach()
    assert pos.shape == (1, 16, 96)
    src = arrays["Transformer/posembed_input/pos_embedding"][0, 1:]  # (4, 96), 2x2 grid
    assert torch.allclose(pos[0, 0], torch.from_numpy(src[0]))  # corners kept (align_corners)
    assert torch.allclose(pos[0, 15], torch.from_numpy(src[3]))


def test_load_vit_npz_rejects_unknown_and_mismatched_keys(tmp_path):
    model = small_teacher()
    path = tmp_path / "extra.npz"
    fake_vit_npz(path, model, extra={"Transformer/encoderblock_7/LayerNorm_0/scale": np.ones(96, np.float32)})
    with pytest.raises(CheckpointError, match=r"extra\.npz: key 'Transformer/encoderblock_7/LayerNorm_0/scale'"):
        load_vit_npz(model, path)

    path = tmp_path / "missing.npz"
    fake_vit_npz(path, model, drop=["gn_root/bias"])
    with pytest.raises(CheckpointError, match=r"missing\.npz: key 'gn_root/bias' is missing"):
        load_vit_npz(model, path)

    path = tmp_path / "shape.npz"
    fake_vit_npz(path, model, extra={"block1/unit1/conv2/kernel": np.zeros((3, 3, 16, 8), np.float32)})
    with pytest.raises(CheckpointError, match=r"shape\.npz: key 'block1/unit1/conv2/kernel'"):
        load_vit_npz(model, path)

    path = tmp_path / "paper.npz"  # a checkpoint for a wider ViT does not fit the small model
    fake_vit_npz(path, small_teacher(hidden_size=128))
    with pytest.raises(CheckpointError, match=r"paper\.npz"):
        load_vit_npz(model, path)


def test_load_vit_npz_missing_or_corrupt_file(tmp_path):
    model = small_teacher()
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_vit_npz(model, tmp_path / "nowhere.npz")
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(CheckpointError, match=r"cannot read .*corrupt\.npz"):
        load_vit_npz(model, bad)


def test_build_model_pretrained_key(tmp_path):
    fake_vit_npz(tmp_path / "vit.npz", small_teacher())
    model = build_model({**SMALL_TEACHER, "pretrained": str(tmp_path / "vit.npz")})
    assert model.embeddings.patch_embeddings.bias.abs().sum() > 0
