"""Tests of the distillation methods (registry, losses, adapters, gradients)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import hkd.distill as distill
from hkd.distill.functional import align, at_map, kd_kl
from hkd.models.base import Feature

# Every method file of hkd/distill (one file per method; the package's shared modules aside): a new method's
# file is tested here without listing it.
SHARED_MODULES = {"__init__", "base", "functional"}
METHODS = tuple(sorted(p.stem for p in (Path(distill.__file__).parent).glob("*.py") if p.stem not in SHARED_MODULES))
NUM_CLASSES = 3
B = 2
S = 32


def specs(shapes: dict, grid: str) -> dict[str, Feature]:
    """Feature specs of maps ``name -> (C, h, w)`` on an S x S input, anchored as the two models are."""
    out = {}
    for name, (c, h, w) in shapes.items():
        stride = S / h
        out[name] = Feature(c, h, w, stride, 0.5 if grid == "top-left" else stride / 2)
    return out


# A small teacher/student pair at S = 32 with the interface's strides and grids (channels reduced).
TEACHER_SHAPES = {"enc_s2": (8, 16, 16), "enc_s4": (16, 8, 8), "enc_s8": (24, 4, 4), "enc_s16": (32, 2, 2),
                  "vit": (20, 2, 2), "bottleneck": (16, 2, 2), "dec_s8": (12, 4, 4), "dec_s4": (8, 8, 8),
                  "dec_s2": (6, 16, 16), "dec_s1": (4, 32, 32), "logits": (NUM_CLASSES, 32, 32)}
STUDENT_SHAPES = {"enc_s1": (4, 32, 32), "enc_s2": (8, 16, 16), "enc_s4": (16, 8, 8), "enc_s8": (32, 4, 4),
                  "bottleneck": (64, 2, 2), "dec_s8": (32, 4, 4), "dec_s4": (16, 8, 8), "dec_s2": (8, 16, 16),
                  "dec_s1": (4, 32, 32), "logits": (NUM_CLASSES, 32, 32)}
TEACHER = specs(TEACHER_SHAPES, "top-left")
STUDENT = specs(STUDENT_SHAPES, "centred")


pytestmark = pytest.mark.usefixtures("one_thread")


def feats(specs_, names, seed, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(B, *specs_[n].shape, generator=g).requires_grad_(requires_grad) for n in names}


def target():
    return torch.randint(0, NUM_CLASSES, (B, 32, 32), generator=torch.Generator().manual_seed(0))


def build(name, teacher=TEACHER, student=STUDENT, **options):
    return distill.build(name, teacher, student, NUM_CLASSES, **options)


def total(terms):
    return sum(terms.values())



# ----------------------------------------------------------------------------------------- registry

def test_registry_lists_all_methods_and_only_methods():
    assert set(distill.available()) == set(METHODS)
    for name in METHODS:
        assert distill.get(name).name == name


def test_unknown_method_names_it():
    with pytest.raises(KeyError, match="nosuchmethod"):
        distill.get("nosuchmethod")


@pytest.mark.parametrize("name", METHODS)
def test_unknown_option_names_it(name):
    with pytest.raises(ValueError, match=rf"'{name}'.*bogus_option"):
        build(name, bogus_option=1)


@pytest.mark.parametrize("name", ["logits", "cwd", "hlfd"])
def test_non_positive_temperature_names_method_and_option(name):
    with pytest.raises(ValueError, match=rf"'{name}'.*'temperature' must be positive"):
        build(name, temperature=0)


def test_missing_feature_is_reported():
    with pytest.raises(ValueError, match="teacher feature 'bottleneck'"):
        distill.build("latent", {}, STUDENT, NUM_CLASSES)


# ------------------------------------------------------------------------------------------- align

def coordinate_map(f: Feature) -> torch.Tensor:
    """A 2-channel map whose cells hold their own centre (row, column) in input-pixel coordinates."""
    rows = f.stride * torch.arange(f.height, dtype=torch.float32) + f.offset
    cols = f.stride * torch.arange(f.width, dtype=torch.float32) + f.offset
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"))[None]


def grid(stride: int, anchor: str, size: int = 128) -> Feature:
    return Feature(1, size // stride, size // stride, float(stride), 0.5 if anchor == "top-left" else stride / 2)


@pytest.mark.parametrize("src,dst", [
    (grid(16, "centred"), grid(16, "top-left")),  # same stride, centres 7.5 px apart
    (grid(16, "top-left"), grid(16, "centred")),
    (grid(2, "centred"), grid(16, "top-left")),  # shrinking x8 across grids
    (grid(8, "top-left"), grid(1, "centred")),  # enlarging
    (grid(1, "centred"), grid(8, "centred")),  # shrinking within one model
])
def test_align_puts_every_cell_at_the_destination_centre(src, dst):
    """Coordinates are linear, so averaging and bilinear sampling reproduce them exactly where the
    destination cell's window lies inside the source: after aligning, each cell holds its own centre."""
    src = Feature(2, src.height, src.width, src.stride, src.offset)
    out = align(coordinate_map(src), src, dst)
    expected = coordinate_map(dst)
    k = max(1, int(dst.stride // src.stride))
    lo = src.offset + (k - 1) / 2 * src.stride  # centre of the first full averaging window
    hi = src.offset + (src.height - 1) * src.stride - (k - 1) / 2 * src.stride
    inside = ((expected >= lo) & (expected <= hi)).all(dim=1, keepdim=True).expand_as(expected)
    assert inside.float().mean() > 0.5
    torch.testing.assert_close(out[inside], expected[inside], rtol=0, atol=1e-3)


def test_align_is_the_identity_on_the_same_grid_and_averages_when_shrinking():
    x = torch.randn(B, 3, 16, 16)
    assert align(x, STUDENT["enc_s2"], STUDENT["enc_s2"]) is x
    src, dst = STUDENT["enc_s2"], specs({"m": (3, 2, 2)}, "centred")["m"]
    # centred grids: each coarse cell is the mean of the 8 x 8 block it covers
    torch.testing.assert_close(align(x, src, dst), F.avg_pool2d(x, 8))
    leaf = torch.randn(B, 3, 16, 16, requires_grad=True)
    align(leaf, src, dst).sum().backward()
    assert (leaf.grad != 0).all(), "every source position reaches the shrunk map"
    shifted = torch.randn(B, 3, 16, 16, requires_grad=True)  # onto the teacher's top-left grid: every
    align(shifted, src, TEACHER["enc_s16"]).sum().backward()  # position its cells cover
    covered = TEACHER["enc_s16"].offset + TEACHER["enc_s16"].stride * 1.5  # far edge of its last cell
    assert (shifted.grad[..., : int(covered // src.stride) - 1, : int(covered // src.stride) - 1] != 0).all()
    plain = torch.randn(B, 3, 16, 16, requires_grad=True)
    F.interpolate(plain, size=(2, 2), mode="bilinear", align_corners=False).sum().backward()
    assert (plain.grad != 0).float().mean() < 0.1, "plain bilinear shrinking skips most positions"


# ------------------------------------------------------------------------------- common properties

@pytest.mark.parametrize("name", [m for m in METHODS if m != "scratch"])
def test_random_features_give_positive_loss_and_correct_gradients(name):
    torch.manual_seed(0)
    method = build(name)
    # Only the declared features are passed: the declarations must be complete.
    t_leaf = feats(TEACHER, method.teacher_features, 1, requires_grad=True)
    s = feats(STUDENT, method.student_features, 2, requires_grad=True)
    terms = method({k: v.detach() for k, v in t_leaf.items()}, s, target())
    assert terms
    for key, value in terms.items():
        assert value.dim() == 0 and torch.isfinite(value), key
        assert value.item() > 0, key
    total(terms).backward()
    for n, x in s.items():
        assert x.grad is not None and torch.isfinite(x.grad).all(), n
        assert x.grad.abs().sum() > 0, n
    for n, x in t_leaf.items():
        assert x.grad is None, n
    for pname, p in method.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", [m for m in METHODS if m != "scratch"])
def test_adapters_sit_on_the_student_side(name):
    """No adapter ever reads a teacher map, nor anything computed from one: the targets do not move when the
    adapters train. Every convolution's input is computed from the student's maps alone (a map itself, or
    an adapter's own intermediate result on one)."""
    method = build(name)
    t = feats(TEACHER, method.teacher_features, 1, requires_grad=True)
    s = feats(STUDENT, method.student_features, 2, requires_grad=True)
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0])) for m in method.modules()
             if isinstance(m, torch.nn.Conv2d)]
    method(t, s, target())
    for h in hooks:
        h.remove()
    assert len(seen) == sum(isinstance(m, torch.nn.Conv2d) for m in method.modules())
    for x in seen:
        assert x.requires_grad, "an adapter reads something that is not computed from a student map"
        from_teacher = torch.autograd.grad(x.sum(), list(t.values()), retain_graph=True, allow_unused=True)
        assert all(g is None for g in from_teacher), "an adapter reads a teacher map"
        from_student = torch.autograd.grad(x.sum(), list(s.values()), retain_graph=True, allow_unused=True)
        assert any(g is not None for g in from_student), "adapters read student maps"


def test_scratch_has_no_terms():
    method = build("scratch")
    assert not method.needs_teacher and method.segmentation_weight == 1.0
    assert method({}, feats(STUDENT, ["logits"], 0), target()) == {}


# ------------------------------------------------------------------------------------------ logits

def test_logits_hinton_form():
    t = feats(TEACHER, ["logits"], 1)
    s = feats(STUDENT, ["logits"], 2)
    method = build("logits", temperature=2.0, alpha=0.3)
    assert method.segmentation_weight == pytest.approx(0.7)
    loss = method(t, s, target())["kd_logits"]
    torch.testing.assert_close(loss, 0.3 * kd_kl(s["logits"], t["logits"], 2.0, dim=1))
    assert not torch.allclose(loss, 0.3 * kd_kl(s["logits"], t["logits"], 2.0, dim=-1), rtol=1e-2)
    assert build("logits")(t, dict(t), target())["kd_logits"].item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="'alpha' must be in"):
        build("logits", alpha=1.0)


def test_logits_known_value():
    # q = softmax([0, 0]) = (1/2, 1/2); p = softmax([ln 3, 0]) = (3/4, 1/4) at T = 4 with s = 4 * [ln 3, 0].
    # KL(q || p) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3); times T^2 = 16 -> 8 ln(4/3), every pixel alike.
    grid = {"logits": Feature(2, 2, 2, 1.0, 0.5)}
    t = torch.zeros(1, 2, 2, 2)
    s = torch.zeros(1, 2, 2, 2)
    s[:, 0] = 4 * math.log(3)
    method = distill.build("logits", grid, grid, 2, alpha=0.5)
    assert method({"logits": t}, {"logits": s}, None)["kd_logits"].item() == pytest.approx(4 * math.log(4 / 3))


# ------------------------------------------------------------------------------------------ latent

def test_latent_identity_projector_when_channels_match():
    student = {**STUDENT, "bottleneck": TEACHER["bottleneck"]}
    method = build("latent", student=student)
    assert isinstance(method.projector, torch.nn.Identity) and not list(method.parameters())
    t = feats(TEACHER, ["bottleneck"], 1)
    assert method(t, dict(t), target())["latent_l1"].item() == 0.0


def test_latent_compares_aligned_cells():
    method = build("latent", weight=2.0)
    assert isinstance(method.projector, torch.nn.Conv2d)
    s = feats(STUDENT, ["bottleneck"], 2)
    with torch.no_grad():
        projected = method.projector(s["bottleneck"])
    t = {"bottleneck": align(projected, STUDENT["bottleneck"], TEACHER["bottleneck"])}
    assert method(t, s, target())["latent_l1"].item() == pytest.approx(0.0, abs=1e-6)
    naive = {"bottleneck": projected}  # cell i with cell i: 7.5 px apart, not the same image position
    assert method(naive, s, target())["latent_l1"].item() > 1e-3
    with pytest.raises(ValueError, match="never"):
        build("latent", project="never")
    with pytest.raises(ValueError, match="auto"):
        build("latent", project="sometimes")


# --------------------------------------------------------------------------------------- functional

def test_at_map_hand_values():
    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]], [[1.0, 2.0], [-1.0, 0.0]]]])  # (1, 2, 2, 2)
    m2 = torch.tensor([1.0, 4.0, 5.0, 0.0])  # mean over channels of x^2
    assert torch.allclose(at_map(x, 2), (m2 / m2.norm())[None])
    m4 = torch.tensor([1.0, 16.0, 41.0, 0.0])  # mean over channels of x^4
    assert torch.allclose(at_map(x, 4), (m4 / m4.norm())[None])


# -------------------------------------------------------------------------------------------- hlfd

def ref_softmax(x, dim):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def ref_kl_pixels(s, t, temp):
    """Per-pixel KL over channels written out, averaged over batch and pixels, times T^2."""
    total_kl, count = 0.0, 0
    for b in range(s.shape[0]):
        q = ref_softmax(t[b] / temp, 0)
        p = ref_softmax(s[b] / temp, 0)
        kl = (q * (torch.log(q) - torch.log(p))).sum(0)  # (H, W)
        total_kl = total_kl + kl.sum()
        count += kl.numel()
    return total_kl / count * temp ** 2


def ref_at_loss(s, t, p):
    """Attention maps written out: mean over channels of x^p, divided by its L2 norm."""
    def amap(x):
        m = sum(x[:, c].abs() ** p for c in range(x.shape[1])) / x.shape[1]
        m = m.reshape(x.shape[0], -1)
        return m / torch.sqrt((m * m).sum(1, keepdim=True))
    return ((amap(s) - amap(t)) ** 2).sum(1).sum() / s.shape[0]


def conv1x1(x, w, b):
    return torch.einsum("oc,bchw->bohw", w, x) + b[None, :, None, None]


def set_fixed_weights(method):
    with torch.no_grad():
        for i, p in enumerate(method.parameters()):
            n = p.numel()
            p.copy_(torch.sin(torch.arange(n, dtype=p.dtype) * 0.7 + i).reshape(p.shape) * 0.3)


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_hlfd_matches_hand_computation(preset):
    method = build("hlfd", preset=preset)
    o = method.options
    set_fixed_weights(method)
    t = feats(TEACHER, method.teacher_features, 3)
    s = feats(STUDENT, method.student_features, 4)
    terms = method(t, s, target())
    assert set(terms) == {"flfd", "plfd"}

    # FLFD: teacher enc_s4..enc_s16 on the stride-16 grid; student enc_s1 averaged onto it.
    g16 = TEACHER["enc_s16"]
    unified = torch.cat([align(t[n], TEACHER[n], g16) for n in ("enc_s4", "enc_s8", "enc_s16")], 1)
    at_u = ref_at_loss(align(s["enc_s1"], STUDENT["enc_s1"], g16), unified, o["p"])
    at_k = sum(ref_at_loss(align(s[n], STUDENT[n], TEACHER["bottleneck"]), t["bottleneck"], o["p"])
               for n in ("enc_s2", "enc_s4", "enc_s8"))
    flfd = o["beta"] * (0.5 * at_u + 0.5 * at_k)

    # PLFD: the teacher's decoder maps on its stride-8 grid are the fixed target of the projected student d5.
    g8 = TEACHER["dec_s8"]
    cat = torch.cat([align(t[n], TEACHER[n], g8) for n in ("dec_s8", "dec_s4", "dec_s2")], 1)
    w, b = method.unify.weight[:, :, 0, 0].detach(), method.unify.bias.detach()
    kl_u = ref_kl_pixels(align(conv1x1(s["dec_s8"], w, b), STUDENT["dec_s8"], g8), cat, o["temperature"])
    pmd = 0.0
    for n in ("dec_s4", "dec_s2", "dec_s1"):
        conv = method.pmd[n]
        y = align(conv1x1(s[n], conv.weight[:, :, 0, 0].detach(), conv.bias.detach()), STUDENT[n], TEACHER["logits"])
        pmd = pmd + ref_kl_pixels(y, t["logits"], o["temperature"])
    plfd = o["alpha"] * (0.5 * kl_u + 0.5 * pmd)

    assert terms["flfd"].item() == pytest.approx(flfd.item(), rel=1e-5)
    assert terms["plfd"].item() == pytest.approx(plfd.item(), rel=1e-5)


def test_hlfd_presets_and_overrides():
    paper = build("hlfd", preset="paper").options
    assert (paper["alpha"], paper["beta"], paper["temperature"], paper["p"]) == (0.1, 0.9, 4.0, 4)
    assert build("hlfd", preset="paper", beta=0.5).options["beta"] == 0.5
    with pytest.raises(ValueError, match="preset"):
        build("hlfd", preset="mine")


def test_hlfd_projectors_are_registered_on_the_student_side():
    method = build("hlfd")
    keys = set(method.state_dict())
    assert {"unify.weight", "pmd.dec_s4.weight", "pmd.dec_s2.weight", "pmd.dec_s1.weight"} <= keys
    assert method.unify.in_channels == STUDENT["dec_s8"].channels  # student d5 ...
    assert method.unify.out_channels == 12 + 8 + 6  # ... to the teacher's concatenated decoder channels


# ---------------------------------------------------------------------------------------------- at

def test_at_pairs_maps_of_equal_stride_and_is_zero_on_identical_maps():
    method = build("at", student=TEACHER)
    assert method.pairs == [("enc_s2", "enc_s2"), ("enc_s4", "enc_s4"), ("enc_s8", "enc_s8"),
                            ("bottleneck", "bottleneck")]
    t = feats(TEACHER, method.teacher_features, 1)
    assert method(t, dict(t), target())["at"].item() == pytest.approx(0.0, abs=1e-8)


def test_at_value_and_layers_option():
    method = build("at", layers="enc_s8:enc_s4, bottleneck", weight=10.0)
    assert method.student_features == ("enc_s8", "bottleneck")
    assert method.teacher_features == ("enc_s4", "bottleneck")
    t = feats(TEACHER, method.teacher_features, 1)
    s = feats(STUDENT, method.student_features, 2)
    # enc_s8 (4x4) is the coarser grid: the teacher's enc_s4 (8x8) is averaged onto it
    expected = ((at_map(s["enc_s8"], 2) - at_map(align(t["enc_s4"], TEACHER["enc_s4"], STUDENT["enc_s8"]), 2)) ** 2
                ).mean()
    expected = expected + ((at_map(align(s["bottleneck"], STUDENT["bottleneck"], TEACHER["bottleneck"]), 2)
                            - at_map(t["bottleneck"], 2)) ** 2).mean()
    assert method(t, s, target())["at"].item() == pytest.approx(5.0 * expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="student feature 'vit'"):
        build("at", layers=["vit"])


# ------------------------------------------------------------------------------------------ fitnet

def test_fitnet_zero_when_regressor_reproduces_teacher():
    method = build("fitnet").eval()
    s = feats(STUDENT, ["bottleneck"], 2)
    with torch.no_grad():
        t = {"bottleneck": align(method.regressor(s["bottleneck"]), STUDENT["bottleneck"], TEACHER["bottleneck"])}
    assert method(t, s, target())["fitnet"].item() == pytest.approx(0.0, abs=1e-10)
    other = build("fitnet", layer="bottleneck:vit")
    assert other.teacher_features == ("vit",) and other.regressor[0].out_channels == 20


# --------------------------------------------------------------------------------------------- mgd

def test_mgd_zero_when_the_generator_reproduces_the_teacher():
    """At ratio 0 nothing is masked: a teacher map that the generator makes from the student's map scores
    exactly 0, and any other map the mean squared difference on the student's grid."""
    same_grid = {**STUDENT, "bottleneck": Feature(64, 2, 2, 16.0, 0.5)}  # the teacher's cells, other channels
    method = build("mgd", student=same_grid, ratio=0.0, weight=3.0)
    s = feats(same_grid, ["bottleneck"], 2)
    with torch.no_grad():
        made = method.generator(method.align_channels(s["bottleneck"]))
    assert method({"bottleneck": made}, s, target())["mgd"].item() == 0.0
    t = feats(TEACHER, ["bottleneck"], 1)
    assert method(t, s, target())["mgd"].item() == pytest.approx(3.0 * (made - t["bottleneck"]).pow(2).mean().item(),
                                                                 rel=1e-6)


def test_mgd_compares_on_the_student_grid():
    method = build("mgd", ratio=0.0, weight=1.0)
    s, t = feats(STUDENT, ["bottleneck"], 2), feats(TEACHER, ["bottleneck"], 1)
    with torch.no_grad():
        made = method.generator(method.align_channels(s["bottleneck"]))
    moved = align(t["bottleneck"], TEACHER["bottleneck"], STUDENT["bottleneck"])  # 8 px apart: resampled
    assert method(t, s, target())["mgd"].item() == pytest.approx((made - moved).pow(2).mean().item(), rel=1e-6)
    assert method(t, s, target())["mgd"].item() != pytest.approx((made - t["bottleneck"]).pow(2).mean().item(),
                                                                  rel=1e-3)


def generator_inputs(method, t, s, calls=1):
    seen = []
    hook = method.generator[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    for _ in range(calls):
        method(t, s, target())
    hook.remove()
    return seen


def test_mgd_masks_whole_cells_of_the_aligned_student_map_at_the_ratio():
    method = build("mgd", ratio=0.3)
    s, t = feats(STUDENT, ["bottleneck"], 2), feats(TEACHER, ["bottleneck"], 1)
    with torch.no_grad():
        aligned = method.align_channels(s["bottleneck"])
    seen = generator_inputs(method, t, s, calls=200)
    masked = torch.stack([(x == 0).all(dim=1) for x in seen]).float()  # (calls, B, h, w)
    for x in seen:
        keep = ~(x == 0).all(dim=1, keepdim=True)
        torch.testing.assert_close(x, aligned * keep, rtol=0, atol=0)
    assert masked.mean().item() == pytest.approx(0.3, abs=0.04)
    assert 0 < masked[0].mean() < 1 or 0 < masked[1].mean() < 1, "masks differ between cells"
    assert not all(torch.equal(seen[0], x) for x in seen[1:]), "a new mask at every call"
    with pytest.raises(ValueError, match=r"'mgd'.*'ratio' must be in \[0, 1\)"):
        build("mgd", ratio=1.0)


def test_mgd_masks_follow_the_seed_and_resume_from_the_state_dict():
    s, t = feats(STUDENT, ["bottleneck"], 2), feats(TEACHER, ["bottleneck"], 1)

    def masks(method, calls=3):
        return [(x == 0).all(dim=1) for x in generator_inputs(method, t, s, calls)]

    torch.manual_seed(5)
    first = build("mgd")
    torch.manual_seed(5)
    again = build("mgd")
    torch.manual_seed(6)
    other = build("mgd")
    drawn = masks(first)
    assert all(torch.equal(a, b) for a, b in zip(drawn, masks(again)))
    assert not all(torch.equal(a, b) for a, b in zip(drawn, masks(other)))
    state = first.state_dict()  # after three draws: the next masks continue from there
    nxt = masks(first)
    resumed = build("mgd")
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(nxt, masks(resumed)))


def test_mgd_stage_and_channel_alignment():
    method = build("mgd", stage="bottleneck:vit")
    assert method.teacher_features == ("vit",) and method.student_features == ("bottleneck",)
    assert method.align_channels.out_channels == 20 and method.generator[2].out_channels == 20
    assert distill.get("mgd").required_teacher_features({"stage": "enc_s8:enc_s4"}) == ("enc_s4",)
    same = build("mgd", student={**STUDENT, "bottleneck": TEACHER["bottleneck"]})
    assert isinstance(same.align_channels, torch.nn.Identity)
    with pytest.raises(ValueError, match="student feature 'vit'"):
        build("mgd", stage="vit")


# --------------------------------------------------------------------------------------------- cwd

def test_cwd_zero_and_value():
    method = build("cwd", weight=2.0)
    t = feats(TEACHER, ["logits"], 1)
    assert method(t, dict(t), target())["cwd"].item() == pytest.approx(0.0, abs=1e-7)
    s = feats(STUDENT, ["logits"], 2)
    tau = 4.0
    q = ref_softmax(t["logits"].flatten(2) / tau, 2)
    p = ref_softmax(s["logits"].flatten(2) / tau, 2)
    kl = (q * (torch.log(q) - torch.log(p))).sum(2)  # (N, C)
    expected = 2.0 * tau ** 2 / (B * NUM_CLASSES) * kl.sum()
    assert method(t, s, target())["cwd"].item() == pytest.approx(expected.item(), rel=1e-5)


# ------------------------------------------------------------------------------------------ relrep

def test_relrep_width_independent_zero():
    wide = {**TEACHER, "bottleneck": Feature(64, 2, 2, 16.0, 0.5)}
    method = build("relrep", student=wide)
    assert not list(method.parameters())
    t = feats(TEACHER, ["bottleneck"], 1)
    # A wider student holding copies of the teacher's embedding has the same cosine similarities.
    s = {"bottleneck": torch.cat([t["bottleneck"]] * 4, dim=1)}
    assert method(t, s, target())["relrep"].item() == pytest.approx(0.0, abs=1e-10)


def test_relrep_value_with_all_positions_as_anchors():
    method = build("relrep", num_anchors=1000, distance="l1", weight=1.0)
    t = feats(TEACHER, ["bottleneck"], 1)
    s = feats(STUDENT, ["bottleneck"], 2)

    def rel(x):
        e = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        e = e / e.norm(dim=1, keepdim=True)
        return e @ e.t()

    s_on_teacher_grid = align(s["bottleneck"], STUDENT["bottleneck"], TEACHER["bottleneck"])
    expected = (rel(s_on_teacher_grid) - rel(t["bottleneck"])).abs().mean()
    assert method(t, s, target())["relrep"].item() == pytest.approx(expected.item(), rel=1e-5)
    few = build("relrep", num_anchors=3)
    assert few.anchor_indices(8, "cpu").shape == (3,)
    assert torch.isfinite(few(t, s, target())["relrep"])


# ------------------------------------------------------------------------------------- integration

def test_every_method_on_tiny_real_models():
    from hkd.models import build_model, recorder_of

    torch.manual_seed(0)
    tspec = {"arch": "transunet", "img_size": 32, "num_classes": 9, "hidden_size": 48, "num_layers": 1,
             "num_heads": 4, "mlp_dim": 96, "block_units": [1, 1, 1], "resnet_width": 8}
    sspec = {"arch": "squeezeunet", "width": 0.25, "num_classes": 9}
    teacher, student = build_model(tspec).eval(), build_model(sspec)
    t_rec, s_rec = recorder_of(teacher, tspec), recorder_of(student, sspec)
    x = torch.randn(2, 1, 32, 32)
    y = torch.randint(0, 9, (2, 32, 32))
    with torch.no_grad():
        t_feats = t_rec(x)
    for name in METHODS:
        method = distill.build(name, t_rec.describe(32), s_rec.describe(32), 9)
        student.zero_grad()
        s_feats = s_rec(x)
        terms = method({k: t_feats[k].detach() for k in method.teacher_features}, s_feats, y)
        if name == "scratch":
            assert terms == {}
            continue
        loss = total(terms)
        assert torch.isfinite(loss) and loss.item() > 0, name
        loss.backward()
        grads = [p.grad for p in student.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name
