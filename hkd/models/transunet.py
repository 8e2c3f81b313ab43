"""TransUNet with the hybrid R50-ViT-B/16 encoder (Chen et al. 2021).

* ResNetV2 stem: weight-standardised convolutions and GroupNorm(32); root 7x7/2 conv + 3x3/2 max pool;
  bottleneck units (conv1x1-GN-ReLU, conv3x3-GN-ReLU with the stride, conv1x1-GN, projection shortcut
  conv1x1-GN, ReLU after the sum) in three blocks of (3, 4, 9) units; skips at 1/2, 1/4, 1/8.
* The 1/16 map goes through a 1x1 patch embedding plus learned position embeddings into a ViT
  (pre-norm blocks, hidden 768, 12 layers, 12 heads, MLP 3072, dropout 0.1 on the embeddings and the MLP,
  attention dropout 0.0 on the attention probabilities and after the output projection, final LayerNorm).
* DecoderCup: tokens back to a map, ``conv_more`` 3x3 -> 512 + BN + ReLU, four blocks of bilinear x2
  (align_corners=True), concatenated skip, two conv3x3-BN-ReLU; a 3x3 segmentation head.
* A 1-channel input is repeated to 3 channels; other input sizes than ``img_size`` (multiples of 16)
  use a bilinearly resized position-embedding grid.

Sizes are constructor arguments, so a small teacher of the same architecture can be built; at the
paper size (224 input, 9 classes) the model has 105,277,081 trainable parameters.

Two details differ from the public PyTorch port and follow the ViT release whose weights
``load_vit_npz`` reads: the projection shortcut uses GroupNorm(32) like every other norm (the port
normalises it per channel), and the max pool is padded so that the 1/4 map is exactly a quarter of
the input (the port pools unpadded and zero-pads the 1/4 skip). Parameter counts are unchanged.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _groupnorm(channels: int, groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6)


class StdConv2d(nn.Conv2d):
    """Conv2d whose weight is standardised (zero mean, unit variance per output filter) on every call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        w = (self.weight - mean) * torch.rsqrt(var + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Bottleneck(nn.Module):
    """ResNetV2 bottleneck unit as used by the R50 hybrid (stride on the 3x3 conv)."""

    def __init__(self, cin: int, cout: int, cmid: int, stride: int = 1, gn_groups: int = 32):
        super().__init__()
        self.conv1 = StdConv2d(cin, cmid, 1, bias=False)
        self.gn1 = _groupnorm(cmid, gn_groups)
        self.conv2 = StdConv2d(cmid, cmid, 3, stride=stride, padding=1, bias=False)
        self.gn2 = _groupnorm(cmid, gn_groups)
        self.conv3 = StdConv2d(cmid, cout, 1, bias=False)
        self.gn3 = _groupnorm(cout, gn_groups)
        if stride != 1 or cin != cout:
            self.conv_proj = StdConv2d(cin, cout, 1, stride=stride, bias=False)
            self.gn_proj = _groupnorm(cout, gn_groups)
        else:
            self.conv_proj = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.conv_proj is None else self.gn_proj(self.conv_proj(x))
        y = F.relu(self.gn1(self.conv1(x)), inplace=True)
        y = F.relu(self.gn2(self.conv2(y)), inplace=True)
        y = self.gn3(self.conv3(y))
        return F.relu(y + residual, inplace=True)


class ResNetV2(nn.Module):
    """R50 stem of the hybrid: root plus ``len(block_units)`` blocks; block ``i`` outputs ``4*width*2**i``."""

    def __init__(self, block_units=(3, 4, 9), width: int = 64, in_channels: int = 3, gn_groups: int = 32):
        super().__init__()
        self.conv_root = StdConv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.gn_root = _groupnorm(width, gn_groups)
        self.relu_root = nn.ReLU(inplace=True)
        blocks = []
        cin = width
        for i, n_units in enumerate(block_units):
            cout, cmid = 4 * width * 2**i, width * 2**i
            units = [(f"unit{j + 1}", Bottleneck(cin if j == 0 else cout, cout, cmid,
                                                 stride=(2 if i > 0 and j == 0 else 1), gn_groups=gn_groups))
                     for j in range(n_units)]
            blocks.append((f"block{i + 1}", nn.Sequential(OrderedDict(units))))
            cin = cout
        self.body = nn.Sequential(OrderedDict(blocks))
        self.out_channels = cin
        self.skip_channels = [4 * width * 2**i for i in range(len(block_units) - 2, -1, -1)] + [width]

    def root(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_root(self.gn_root(self.conv_root(x)))


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float, attention_dropout: float = 0.0):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        # The published model applies its attention dropout rate (0.0) to the attention probabilities and
        # after the output projection; ``dropout`` is used only by the embeddings and the MLP.
        self.attention_dropout = attention_dropout
        self.proj_dropout = nn.Dropout(attention_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                           dropout_p=self.attention_dropout if self.training else 0.0)
        return self.proj_dropout(self.out(y.transpose(1, 2).reshape(b, n, d)))


class Mlp(nn.Module):
    def __init__(self, hidden: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(hidden, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))


class TransformerBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_dim: int, dropout: float, attention_dropout: float = 0.0):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.attn = Attention(hidden, heads, dropout, attention_dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.ffn = Mlp(hidden, mlp_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attention_norm(x))
        return x + self.ffn(self.ffn_norm(x))


class Embeddings(nn.Module):
    """1x1 patch embedding of the 1/16 CNN map plus learned position embeddings."""

    def __init__(self, in_channels: int, hidden: int, grid: tuple[int, int], dropout: float):
        super().__init__()
        self.grid = grid
        self.patch_embeddings = nn.Conv2d(in_channels, hidden, 1)
        self.position_embeddings = nn.Parameter(torch.zeros(1, grid[0] * grid[1], hidden))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embeddings(x)
        h, w = x.shape[-2:]
        pos = self.position_embeddings
        if (h, w) != self.grid:  # other input size: resize the learned grid
            pos = pos.transpose(1, 2).reshape(1, -1, *self.grid)
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=True).flatten(2).transpose(1, 2)
        return self.dropout(x.flatten(2).transpose(1, 2) + pos)


class Encoder(nn.Module):
    def __init__(self, hidden: int, num_layers: int, heads: int, mlp_dim: int, dropout: float,
                 attention_dropout: float = 0.0):
        super().__init__()
        self.layer = nn.ModuleList(TransformerBlock(hidden, heads, mlp_dim, dropout, attention_dropout)
                                   for _ in range(num_layers))
        self.encoder_norm = nn.LayerNorm(hidden, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layer:
            x = block(x)
        return self.encoder_norm(x)


class Conv2dReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, skip: int):
        super().__init__()
        self.conv1 = Conv2dReLU(cin + skip, cout)
        self.conv2 = Conv2dReLU(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class DecoderCup(nn.Module):
    def __init__(self, hidden: int, decoder_channels, skip_channels, n_skip: int, latent_channels: int = 512):
        super().__init__()
        self.conv_more = Conv2dReLU(hidden, latent_channels)
        ins = [latent_channels, *decoder_channels[:-1]]
        skips = [c if i < n_skip else 0 for i, c in enumerate(skip_channels)]
        self.blocks = nn.ModuleList(DecoderBlock(i, o, s) for i, o, s in zip(ins, decoder_channels, skips))
        self.n_skip = n_skip


# Where its maps are read (name: stride on the input; ``vit``: the transformer's tokens laid on their grid;
# see hkd.models.recorder). Every map is anchored at the top-left: the 7x7/2 root conv (padding 3), the
# padded 3x3/2 max pool and the stride-2 3x3 convs (padding 1) centre output cell i on input pixel stride*i,
# i.e. at stride*i + 0.5 in continuous pixel coordinates. Decoder maps follow the grid of the skip they are
# concatenated with; the last block (no skip) and the head sit on the input grid.
FEATURES = {"enc_s2": "resnet.relu_root", "enc_s4": "resnet.body.block1", "enc_s8": "resnet.body.block2",
            "enc_s16": "resnet.body.block3", "vit": "encoder", "bottleneck": "decoder.conv_more",
            "dec_s8": "decoder.blocks.0", "dec_s4": "decoder.blocks.1", "dec_s2": "decoder.blocks.2",
            "dec_s1": "decoder.blocks.3"}
GRID = "top-left"
GRADCAM_LAYER = "decoder.blocks.3"  # last decoder block (full resolution)
# The ResNet root and stages (enc1..), the transformer with its embeddings (vit), the DecoderCup's conv_more
# (bottleneck), its decoder blocks (dec1..) and the head.
BLOCKS = {"enc1": ["resnet.conv_root", "resnet.gn_root"], **{f"enc{i + 2}": [f"resnet.body.block{i + 1}"] for i in range(3)},
          "vit": ["embeddings", "encoder"], "bottleneck": ["decoder.conv_more"],
          **{f"dec{i + 1}": [f"decoder.blocks.{i}"] for i in range(4)}, "head": ["head"]}


class TransUNet(nn.Module):
    """TransUNet R50-ViT-B/16 (defaults) or a smaller model of the same architecture."""

    def __init__(self, img_size: int = 224, num_classes: int = 9, in_channels: int = 1,
                 hidden_size: int = 768, num_layers: int = 12, num_heads: int = 12, mlp_dim: int = 3072,
                 block_units=(3, 4, 9), resnet_width: int = 64, decoder_channels=(256, 128, 64, 16),
                 n_skip: int = 3, dropout: float = 0.1, latent_channels: int = 512, gn_groups: int = 32,
                 attention_dropout: float = 0.0):
        super().__init__()
        if len(block_units) != 3 or len(decoder_channels) != 4:
            raise ValueError("TransUNet needs 3 ResNet blocks (1/16 tokens) and 4 decoder channels")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (repeated to 3) or 3, got {in_channels}")
        if img_size % 16:
            raise ValueError(f"img_size must be divisible by 16, got {img_size}")
        if not 0 <= n_skip <= 3:
            raise ValueError(f"n_skip must be in 0..3, got {n_skip}")
        self.config = dict(img_size=img_size, num_classes=num_classes, in_channels=in_channels,
                           hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, mlp_dim=mlp_dim,
                           block_units=tuple(block_units), resnet_width=resnet_width,
                           decoder_channels=tuple(decoder_channels), n_skip=n_skip, dropout=dropout,
                           latent_channels=latent_channels, gn_groups=gn_groups,
                           attention_dropout=attention_dropout)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.resnet = ResNetV2(block_units, resnet_width, 3, gn_groups)
        grid = (img_size // 16, img_size // 16)
        self.embeddings = Embeddings(self.resnet.out_channels, hidden_size, grid, dropout)
        self.encoder = Encoder(hidden_size, num_layers, num_heads, mlp_dim, dropout, attention_dropout)
        self.decoder = DecoderCup(hidden_size, decoder_channels, self.resnet.skip_channels + [0], n_skip,
                                  latent_channels)
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % 16 or x.shape[-1] % 16:
            raise ValueError(f"TransUNet input height and width must be divisible by 16, got {tuple(x.shape[-2:])}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = self.resnet.root(x)
        skips = [x]
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        for block in self.resnet.body:
            x = block(x)
            skips.append(x)
        skips = skips[-2::-1]  # 1/8, 1/4, 1/2
        h, w = x.shape[-2:]
        tokens = self.encoder(self.embeddings(x))
        x = self.decoder.conv_more(tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w))
        for i, block in enumerate(self.decoder.blocks):
            x = block(x, skips[i] if i < self.decoder.n_skip else None)
        return self.head(x)


# --- Google ViT checkpoint (R50+ViT-B_16.npz) -------------------------------------------------------

class CheckpointError(ValueError):
    """An npz checkpoint that cannot be read or does not fit the model."""


_IGNORED_NPZ_PREFIXES = ("cls", "head/", "pre_logits/")  # classifier parts TransUNet does not use
_BLOCK_KEYS = {  # npz sub-key -> (module attribute path, kind)
    "MultiHeadDotProductAttention_1/query/kernel": ("attn.query.weight", "qkv_kernel"),
    "MultiHeadDotProductAttention_1/query/bias": ("attn.query.bias", "flat"),
    "MultiHeadDotProductAttention_1/key/kernel": ("attn.key.weight", "qkv_kernel"),
    "MultiHeadDotProductAttention_1/key/bias": ("attn.key.bias", "flat"),
    "MultiHeadDotProductAttention_1/value/kernel": ("attn.value.weight", "qkv_kernel"),
    "MultiHeadDotProductAttention_1/value/bias": ("attn.value.bias", "flat"),
    "MultiHeadDotProductAttention_1/out/kernel": ("attn.out.weight", "out_kernel"),
    "MultiHeadDotProductAttention_1/out/bias": ("attn.out.bias", "flat"),
    "MlpBlock_3/Dense_0/kernel": ("ffn.fc1.weight", "dense"),
    "MlpBlock_3/Dense_0/bias": ("ffn.fc1.bias", "flat"),
    "MlpBlock_3/Dense_1/kernel": ("ffn.fc2.weight", "dense"),
    "MlpBlock_3/Dense_1/bias": ("ffn.fc2.bias", "flat"),
    "LayerNorm_0/scale": ("attention_norm.weight", "flat"),
    "LayerNorm_0/bias": ("attention_norm.bias", "flat"),
    "LayerNorm_2/scale": ("ffn_norm.weight", "flat"),
    "LayerNorm_2/bias": ("ffn_norm.bias", "flat"),
}


def _npz_key_map(model: TransUNet) -> dict[str, tuple[str, str]]:
    """Every npz key the model expects -> (parameter name in ``model``, conversion kind)."""
    keys = {
        "embedding/kernel": ("embeddings.patch_embeddings.weight", "conv"),
        "embedding/bias": ("embeddings.patch_embeddings.bias", "flat"),
        "Transformer/posembed_input/pos_embedding": ("embeddings.position_embeddings", "posemb"),
        "Transformer/encoder_norm/scale": ("encoder.encoder_norm.weight", "flat"),
        "Transformer/encoder_norm/bias": ("encoder.encoder_norm.bias", "flat"),
        "conv_root/kernel": ("resnet.conv_root.weight", "conv"),
        "gn_root/scale": ("resnet.gn_root.weight", "flat"),
        "gn_root/bias": ("resnet.gn_root.bias", "flat"),
    }
    for i in range(len(model.encoder.layer)):
        for sub, (attr, kind) in _BLOCK_KEYS.items():
            keys[f"Transformer/encoderblock_{i}/{sub}"] = (f"encoder.layer.{i}.{attr}", kind)
    for bname, block in model.resnet.body.named_children():
        for uname, unit in block.named_children():
            parts = ["conv1", "conv2", "conv3"] + (["conv_proj"] if unit.conv_proj is not None else [])
            for conv in parts:
                keys[f"{bname}/{uname}/{conv}/kernel"] = (f"resnet.body.{bname}.{uname}.{conv}.weight", "conv")
                gn = conv.replace("conv", "gn")
                keys[f"{bname}/{uname}/{gn}/scale"] = (f"resnet.body.{bname}.{uname}.{gn}.weight", "flat")
                keys[f"{bname}/{uname}/{gn}/bias"] = (f"resnet.body.{bname}.{uname}.{gn}.bias", "flat")
    return keys


def _convert(value: np.ndarray, kind: str, target: torch.Tensor) -> np.ndarray:
    """Turn an npz array into the layout of ``target``; raise ValueError when shapes do not fit."""
    if kind == "conv":  # HWIO -> OIHW
        if value.ndim != 4:
            raise ValueError(f"expected a 4-d HWIO kernel, got shape {value.shape}")
        value = value.transpose(3, 2, 0, 1)
    elif kind in ("qkv_kernel", "dense"):  # (in, heads, head_dim) or (in, out) -> (out, in)
        value = value.reshape(value.shape[0], -1).T
    elif kind == "out_kernel":  # (heads, head_dim, out) -> (out, in)
        value = value.reshape(-1, value.shape[-1]).T
    elif kind == "flat":
        value = value.reshape(-1)
    elif kind == "posemb":
        value = _resize_posemb(value, target.shape)
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f"shape {tuple(value.shape)} after conversion does not match the model's "
                         f"{tuple(target.shape)}")
    return value


def _resize_posemb(value: np.ndarray, shape: torch.Size) -> np.ndarray:
    if value.ndim != 3 or value.shape[-1] != shape[-1]:
        raise ValueError(f"position embedding of shape {value.shape} cannot fit {tuple(shape)}")
    n_new, n_old = shape[1], value.shape[1]
    if n_old == n_new:
        return value
    old = math.isqrt(n_old)
    if old * old != n_old:  # drop the class token
        value, n_old = value[:, 1:], n_old - 1
        old = math.isqrt(n_old)
    new = math.isqrt(n_new)
    if old * old != n_old or new * new != n_new:
        raise ValueError(f"position embedding grid {value.shape[1]} -> {n_new} is not square")
    if old != new:
        grid = torch.from_numpy(np.ascontiguousarray(value[0].T.reshape(1, -1, old, old), dtype=np.float32))
        grid = F.interpolate(grid, size=(new, new), mode="bilinear", align_corners=True)
        value = grid.reshape(1, -1, n_new).transpose(1, 2).numpy()
    return value


def load_vit_npz(model: TransUNet, path: str | Path) -> TransUNet:
    """Initialise ``model`` from Google's ``R50+ViT-B_16.npz`` (or a file with the same key layout).

    Every ResNet and ViT weight must be present with a fitting shape; the classifier entries
    (``cls``, ``head/*``, ``pre_logits/*``) are ignored; the decoder and head keep their initialisation.
    The class token is dropped from the position embeddings, whose grid is resized when needed.
    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` (a ``ValueError``)
    naming the file and the key for an unreadable file, an unknown or missing key, or a shape mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ViT checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            weights = {k: npz[k] for k in npz.files}
    except Exception as err:  # zip, pickle and format errors all mean the same thing here
        raise CheckpointError(f"cannot read {path} as an .npz checkpoint: {err}") from err
    expected = _npz_key_map(model)
    unknown = sorted(k for k in weights if k not in expected and not k.startswith(_IGNORED_NPZ_PREFIXES))
    if unknown:
        raise CheckpointError(f"{path}: key '{unknown[0]}' has no place in this TransUNet"
                       f" ({len(unknown)} unknown key(s); is the model configured like the checkpoint?)")
    missing = sorted(k for k in expected if k not in weights)
    if missing:
        raise CheckpointError(f"{path}: key '{missing[0]}' is missing ({len(missing)} missing key(s))")
    params = dict(model.named_parameters())
    converted = {}
    for key, (name, kind) in expected.items():
        target = params[name]
        try:
            converted[name] = _convert(np.asarray(weights[key]), kind, target)
        except ValueError as err:
            raise CheckpointError(f"{path}: key '{key}' (shape {weights[key].shape}) -> {name}: {err}") from None
    with torch.no_grad():
        for name, value in converted.items():
            target = params[name]
            target.copy_(torch.as_tensor(np.ascontiguousarray(value), dtype=target.dtype))
    return model
