"""Tests of the distillation methods (registry, losses, adapters, gradients)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import hkd.distill as distill
from hkd.distill.functional import at_map, kd_kl

METHODS = ("scratch", "logits", "latent", "hlfd", "at", "fitnet", "cwd", "relrep")
NUM_CLASSES = 3
B = 2

# A small teacher/student pair at S = 32 with the interface's resolutions (channels reduced).
TEACHER = {"enc1": (8, 16, 16), "enc2": (16, 8, 8), "enc3": (24, 4, 4), "enc4": (32, 2, 2),
           "vit": (20, 2, 2), "latent": (16, 2, 2), "dec4": (12, 4, 4), "dec3": (8, 8, 8),
           "dec2": (6, 16, 16), "dec1": (4, 32, 32), "logits": (NUM_CLASSES, 32, 32)}
STUDENT = {"enc1": (4, 32, 32), "enc2": (8, 16, 16), "enc3": (16, 8, 8), "enc4": (32, 4, 4),
           "latent": (64, 2, 2), "dec4": (32, 4, 4), "dec3": (16, 8, 8), "dec2": (8, 16, 16),
           "dec1": (4, 32, 32), "logits": (NUM_CLASSES, 32, 32)}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscribing shared CPUs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def feats(shapes, names, seed, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(B, *shapes[n], generator=g).requires_grad_(requires_grad) for n in names}


def target():
    return torch.randint(0, NUM_CLASSES, (B, 32, 32), generator=torch.Generator().manual_seed(0))


def build(name, teacher=TEACHER, student=STUDENT, **options):
    return distill.build(name, teacher, student, NUM_CLASSES, **options)


def total(terms):
    return sum(terms.values())


def at_matching(t, channels, size, p):
    """A map with ``channels`` channels at ``size`` whose resized attention map equals that of ``t``."""
    m = t.abs().pow(p).mean(1, keepdim=True).pow(1.0 / p)
    fh, fw = size[0] // t.shape[-2], size[1] // t.shape[-1]
    up = m.repeat_interleave(fh, dim=2).repeat_interleave(fw, dim=3)  # bilinear /f then averages equal pixels
    return up.expand(-1, channels, -1, -1).clone()


# ----------------------------------------------------------------------------------------- registry

def test_registry_lists_all_methods():
    assert set(METHODS) <= set(distill.available())
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


def test_missing_feature_shape_is_reported():
    with pytest.raises(ValueError, match="teacher feature 'latent'"):
        distill.build("latent", {}, STUDENT, NUM_CLASSES)


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


def test_scratch_has_no_terms():
    method = build("scratch")
    assert not method.needs_teacher
    assert method({}, feats(STUDENT, ["logits"], 0), target()) == {}


# ------------------------------------------------------------------------------------------ logits

def test_logits_zero_when_student_equals_teacher():
    t = feats(TEACHER, ["logits"], 1)
    assert build("logits")(t, dict(t), target())["kd_logits"].item() == pytest.approx(0.0, abs=1e-7)


def test_logits_softmax_over_classes_not_width():
    t = feats(TEACHER, ["logits"], 1)
    s = feats(STUDENT, ["logits"], 2)
    loss = build("logits", temperature=2.0, weight=0.5)(t, s, target())["kd_logits"]
    over_classes = 0.5 * kd_kl(s["logits"], t["logits"], 2.0, dim=1)
    over_width = 0.5 * kd_kl(s["logits"], t["logits"], 2.0, dim=-1)
    assert torch.allclose(loss, over_classes)
    assert not torch.allclose(loss, over_width, rtol=1e-2)


def test_logits_known_value():
    # q = softmax([0, 0]) = (1/2, 1/2); p = softmax([ln 3, 0]) = (3/4, 1/4) at T = 4 with s = 4 * [ln 3, 0].
    # KL(q || p) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3); times T^2 = 16 -> 8 ln(4/3), every pixel alike.
    shapes = {"logits": (2, 2, 2)}
    t = torch.zeros(1, 2, 2, 2)
    s = torch.zeros(1, 2, 2, 2)
    s[:, 0] = 4 * math.log(3)
    method = distill.build("logits", shapes, shapes, 2)
    assert method({"logits": t}, {"logits": s}, None)["kd_logits"].item() == pytest.approx(8 * math.log(4 / 3))


def test_logits_resizes_teacher():
    small = {"logits": (NUM_CLASSES, 16, 16)}
    t = {"logits": torch.randn(B, NUM_CLASSES, 16, 16)}
    s = {"logits": torch.randn(B, NUM_CLASSES, 32, 32)}
    loss = build("logits", teacher=small)(t, s, target())["kd_logits"]
    up = F.interpolate(t["logits"], size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(loss, kd_kl(s["logits"], up, 4.0))


# ------------------------------------------------------------------------------------------ latent

def test_latent_identity_when_channels_match():
    student = {**STUDENT, "latent": TEACHER["latent"]}
    method = build("latent", student=student)
    assert isinstance(method.projector, torch.nn.Identity) and not list(method.parameters())
    t = feats(TEACHER, ["latent"], 1)
    assert method(t, dict(t), target())["latent_l1"].item() == 0.0
    s = feats(student, ["latent"], 2)
    assert torch.allclose(method(t, s, target())["latent_l1"], (t["latent"] - s["latent"]).abs().mean())


def test_latent_projector_zero_and_modes():
    method = build("latent", weight=2.0)
    assert isinstance(method.projector, torch.nn.Conv2d)
    s = feats(STUDENT, ["latent"], 2)
    with torch.no_grad():
        t = {"latent": method.projector(s["latent"])}
    assert method(t, s, target())["latent_l1"].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="never"):
        build("latent", project="never")
    same = {**STUDENT, "latent": TEACHER["latent"]}
    assert isinstance(build("latent", student=same, project="always").projector, torch.nn.Conv2d)
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
        m = sum(x[:, c] ** p for c in range(x.shape[1])) / x.shape[1]
        m = m.reshape(x.shape[0], -1)
        return m / torch.sqrt((m * m).sum(1, keepdim=True))
    return ((amap(s) - amap(t)) ** 2).sum(1).sum() / s.shape[0]


def conv1x1(x, w, b):
    return torch.einsum("oc,bchw->bohw", w, x) + b[None, :, None, None]


def interp(x, size):
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear",
                                                                      align_corners=False)


def set_fixed_weights(method):
    with torch.no_grad():
        for i, p in enumerate(method.parameters()):
            n = p.numel()
            p.copy_(torch.sin(torch.arange(n, dtype=p.dtype) * 0.7 + i).reshape(p.shape) * 0.3)


def test_hlfd_matches_hand_computation():
    method = build("hlfd")
    set_fixed_weights(method)
    t = feats(TEACHER, method.teacher_features, 3)
    s = feats(STUDENT, method.student_features, 4)
    terms = method(t, s, target())
    assert set(terms) == {"flfd", "plfd"}

    # FLFD: student enc1 <- teacher enc2, enc3, enc4 (at 2x2, then to 32x32); enc2..enc4 vs teacher latent.
    smallest = (2, 2)
    unified = interp(torch.cat([interp(t[n], smallest) for n in ("enc2", "enc3", "enc4")], 1), (32, 32))
    at_u = ref_at_loss(s["enc1"], unified, 4)
    at_k = sum(ref_at_loss(interp(s[n], (2, 2)), t["latent"], 4) for n in ("enc2", "enc3", "enc4"))
    flfd = 0.9 * (0.5 * at_u + 0.5 * at_k)

    # PLFD: student dec4 <- 1x1(teacher dec4, dec3, dec2 at 4x4); student dec3, dec2, dec1 -> classes.
    cat = torch.cat([interp(t[n], (4, 4)) for n in ("dec4", "dec3", "dec2")], 1)
    w, b = method.unify.weight[:, :, 0, 0].detach(), method.unify.bias.detach()
    kl_u = ref_kl_pixels(s["dec4"], conv1x1(cat, w, b), 4.0)
    pmd = 0.0
    for n in ("dec3", "dec2", "dec1"):
        conv = method.pmd[n]
        y = interp(conv1x1(s[n], conv.weight[:, :, 0, 0].detach(), conv.bias.detach()), (32, 32))
        pmd = pmd + ref_kl_pixels(y, t["logits"], 4.0)
    plfd = 0.1 * (0.5 * kl_u + 0.5 * pmd)

    assert terms["flfd"].item() == pytest.approx(flfd.item(), rel=1e-5)
    assert terms["plfd"].item() == pytest.approx(plfd.item(), rel=1e-5)


def test_hlfd_zero_when_student_reproduces_teacher():
    method = build("hlfd")
    t = feats(TEACHER, method.teacher_features, 3)
    s = {}
    unified = interp(torch.cat([interp(t[n], (2, 2)) for n in ("enc2", "enc3", "enc4")], 1), (32, 32))
    s["enc1"] = at_matching(unified, STUDENT["enc1"][0], (32, 32), 4)
    for n in ("enc2", "enc3", "enc4"):
        s[n] = at_matching(t["latent"], STUDENT[n][0], STUDENT[n][1:], 4)
    with torch.no_grad():
        cat = torch.cat([interp(t[n], (4, 4)) for n in ("dec4", "dec3", "dec2")], 1)
        s["dec4"] = method.unify(cat)
        # Prediction maps: zero projectors with a shared bias reproduce spatially constant teacher logits.
        bias = torch.tensor([0.5, -1.0, 2.0])
        for conv in method.pmd.values():
            conv.weight.zero_()
            conv.bias.copy_(bias)
    t["logits"] = bias[None, :, None, None].expand(B, -1, 32, 32).clone()
    for n in ("dec3", "dec2", "dec1"):
        s[n] = torch.randn(B, *STUDENT[n])
    terms = method(t, s, target())
    assert terms["flfd"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["plfd"].item() == pytest.approx(0.0, abs=1e-6)


def test_hlfd_projectors_are_registered_and_persistent():
    method = build("hlfd")
    keys = set(method.state_dict())
    assert {"unify.weight", "pmd.dec3.weight", "pmd.dec2.weight", "pmd.dec1.weight"} <= keys
    assert method.unify.in_channels == 12 + 8 + 6 and method.unify.out_channels == 32
    t = feats(TEACHER, method.teacher_features, 3)
    s = feats(STUDENT, method.student_features, 4)
    assert torch.equal(total(method(t, s, target())), total(method(t, s, target())))


# ---------------------------------------------------------------------------------------------- at

def test_at_zero_when_attention_matches():
    method = build("at")
    assert method.pairs == [("enc2", "enc1"), ("enc3", "enc2"), ("enc4", "enc3"), ("latent", "latent")]
    t = feats(TEACHER, method.teacher_features, 1)
    s = {sn: at_matching(t[tn], STUDENT[sn][0], STUDENT[sn][1:], 2) for sn, tn in method.pairs}
    assert method(t, s, target())["at"].item() == pytest.approx(0.0, abs=1e-8)


def test_at_value_and_layers_option():
    method = build("at", layers="enc4:enc2, latent", weight=10.0)
    assert method.student_features == ("enc4", "latent")
    assert method.teacher_features == ("enc2", "latent")
    t = feats(TEACHER, method.teacher_features, 1)
    s = feats(STUDENT, method.student_features, 2)
    expected = 0.0
    for sn, tn in (("enc4", "enc2"), ("latent", "latent")):
        a_s = at_map(interp(s[sn], TEACHER[tn][1:]), 2)
        expected = expected + ((a_s - at_map(t[tn], 2)) ** 2).mean()
    assert method(t, s, target())["at"].item() == pytest.approx(5.0 * expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="student feature 'vit'"):
        build("at", layers=["vit"])


# ------------------------------------------------------------------------------------------ fitnet

def test_fitnet_zero_when_regressor_reproduces_teacher():
    method = build("fitnet")
    s = feats(STUDENT, ["latent"], 2)
    with torch.no_grad():
        t = {"latent": method.regressor(s["latent"])}
    assert method(t, s, target())["fitnet"].item() == pytest.approx(0.0, abs=1e-10)
    other = build("fitnet", layer="latent:vit")
    assert other.teacher_features == ("vit",) and other.regressor[0].out_channels == 20


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
    method = build("relrep")
    assert not list(method.parameters())
    t = feats(TEACHER, ["latent"], 1)
    # A wider student holding copies of the teacher's embedding has the same cosine similarities.
    s = {"latent": torch.cat([t["latent"]] * 4, dim=1)}
    assert method(t, s, target())["relrep"].item() == pytest.approx(0.0, abs=1e-10)


def test_relrep_value_with_all_positions_as_anchors():
    method = build("relrep", num_anchors=1000, distance="l1")
    t = feats(TEACHER, ["latent"], 1)
    s = feats(STUDENT, ["latent"], 2)

    def rel(x):
        e = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        e = e / e.norm(dim=1, keepdim=True)
        return e @ e.t()

    expected = (rel(s["latent"]) - rel(t["latent"])).abs().mean()
    assert method(t, s, target())["relrep"].item() == pytest.approx(expected.item(), rel=1e-5)
    few = build("relrep", num_anchors=3)
    assert few.anchor_indices(8, "cpu").shape == (3,)
    assert torch.isfinite(few(t, s, target())["relrep"])


# ------------------------------------------------------------------------------------- integration

def test_every_method_on_tiny_real_models():
    import hkd.models  # an import error fails this test: the models are part of the package

    torch.manual_seed(0)
    teacher = hkd.models.build_model({"arch": "transunet", "img_size": 32, "num_classes": 9, "hidden_size": 48,
                                      "num_layers": 1, "num_heads": 4, "mlp_dim": 96, "block_units": [1, 1, 1],
                                      "resnet_width": 8}).eval()
    student = hkd.models.build_model({"arch": "squeezeunet", "width": 0.25, "num_classes": 9})
    x = torch.randn(2, 1, 32, 32)
    y = torch.randint(0, 9, (2, 32, 32))
    with torch.no_grad():
        t_feats = teacher.forward_features(x)
    t_shapes = {k: tuple(v.shape[1:]) for k, v in t_feats.items()}
    s_shapes = {k: tuple(v.shape[1:]) for k, v in student.forward_features(x).items()}
    for name in METHODS:
        method = distill.build(name, t_shapes, s_shapes, 9)
        student.zero_grad()
        s_feats = student.forward_features(x)
        terms = method({k: t_feats[k].detach() for k in method.teacher_features}, s_feats, y)
        if name == "scratch":
            assert terms == {}
            continue
        loss = total(terms)
        assert torch.isfinite(loss) and loss.item() > 0, name
        loss.backward()
        grads = [p.grad for p in student.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name
