"""Invariants every registered distillation method keeps, on the real tiny TransUNet teacher and SqueezeUNet
student, and hand computations of dkd, dist, cka, infoflow and ofa on tiny hand-made inputs."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hkd.distill as distill
from hkd.models import build_model, count_parameters, recorder_of
from hkd.models.base import Feature
from hkd.data.tasks import IGNORE

# Every registered method that distils (scratch has no terms).
DISTILLED = [name for name in distill.available() if name != "scratch"]
# The methods that compare what has the same size in both networks whatever their widths (class
# probabilities, attention maps, relations between samples or positions): they train no adapter.
ADAPTER_FREE = ("at", "cka", "cwd", "dist", "dkd", "infoflow", "logits", "relrep")
# A student identical to its teacher scores zero under these methods. The others score zero only once their
# adapters reproduce the teacher (each has its own test, named test_<method>_zero...), or never (below).
ZERO_WHEN_EQUAL = ("at", "cka", "cwd", "dist", "dkd", "infoflow", "latent", "logits", "relrep")
NEVER_ZERO_FOR_A_COPY = {"ofa": "its term is a cross-entropy, which does not vanish for equal distributions",
                         "hlfd": "it pairs each student stage with other stages of the teacher"}
TESTS = Path(__file__).resolve().parents[1]
CLASSES = 9
SIZE = 32


def features(rec, x, names=None):
    """The named maps a model's recorder reads (the one place these tests read features)."""
    return rec(x, names)


def specs(rec, size):
    """Where the named maps live (the one place these tests read feature specs)."""
    return rec.describe(size)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models():
    """(teacher, student, x, y, teacher recorder, student recorder): the real tiny TransUNet and SqueezeUNet."""
    torch.manual_seed(0)
    tspec = {"arch": "transunet", "img_size": SIZE, "num_classes": CLASSES, "hidden_size": 48, "num_layers": 1,
             "num_heads": 4, "mlp_dim": 96, "block_units": [1, 1, 1], "resnet_width": 8}
    sspec = {"arch": "squeezeunet", "width": 0.25, "num_classes": CLASSES}
    teacher, student = build_model(tspec).eval(), build_model(sspec)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, SIZE, SIZE, generator=gen)
    y = torch.randint(0, CLASSES, (4, SIZE, SIZE), generator=gen)
    y[0, :3] = IGNORE  # a strip outside a rotated slice
    return teacher, student, x, y, recorder_of(teacher, tspec, "teacher"), recorder_of(student, sspec, "student")


def teacher_maps(t_rec, x, method):
    with torch.no_grad():
        return {k: v.detach() for k, v in features(t_rec, x, list(method.teacher_features)).items()}


# --------------------------------------------------------------------------------- real tiny models

def test_registered_each_in_its_own_file():
    for name in distill.available():
        assert name in distill.available()
        cls = distill.get(name)
        assert cls.name == name and cls.__module__ == distill.module_of(name)


@pytest.mark.parametrize("name", ZERO_WHEN_EQUAL)
def test_a_student_identical_to_the_teacher_gets_zero_loss(models, name):
    """Zero up to rounding: a thousandth of what the (untrained, different) student gets."""
    teacher, student, x, y, t_rec, s_rec = models
    tspecs = specs(t_rec, SIZE)
    method = distill.build(name, tspecs, specs(s_rec, SIZE), CLASSES)
    different = method(teacher_maps(t_rec, x, method), features(s_rec, x), y)
    same = distill.build(name, tspecs, tspecs, CLASSES)
    t = teacher_maps(t_rec, x, same)
    identical = same(t, {k: v.clone() for k, v in t.items()}, y)
    assert identical and identical.keys() == different.keys()
    for key in identical:
        assert different[key].item() > 0, key
        assert abs(identical[key].item()) <= 1e-3 * different[key].item(), (key, identical[key], different[key])


def _test_functions() -> set[str]:
    """Names of the test functions of the whole suite."""
    return {node.name for path in TESTS.rglob("test_*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_method_is_zero_for_a_copy_of_its_teacher_or_says_why_not():
    own_tests = {name for name in DISTILLED if any(t.startswith(f"test_{name}_zero") for t in _test_functions())}
    assert not set(ZERO_WHEN_EQUAL) & set(NEVER_ZERO_FOR_A_COPY)
    assert set(ZERO_WHEN_EQUAL) | own_tests | set(NEVER_ZERO_FOR_A_COPY) == set(DISTILLED), \
        "a method with neither a zero-loss test nor a reason why it has none"


@pytest.mark.parametrize("name", DISTILLED)
def test_terms_reach_the_student_and_only_the_student(models, name):
    teacher, student, x, y, t_rec, s_rec = models
    method = distill.build(name, specs(t_rec, SIZE), specs(s_rec, SIZE), CLASSES)
    student.zero_grad()
    terms = method(teacher_maps(t_rec, x, method), features(s_rec, x), y)
    sum(terms.values()).backward()
    assert all(torch.isfinite(v) for v in terms.values())
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in teacher.parameters())
    student.zero_grad()


def test_only_methods_comparing_width_free_quantities_go_without_adapters(models):
    """Between the TransUNet and the narrower SqueezeUNet, the methods of ``ADAPTER_FREE`` train no
    parameters of their own, and every other method does."""
    *_, t_rec, s_rec = models
    without = [name for name in DISTILLED
               if not list(distill.build(name, specs(t_rec, SIZE), specs(s_rec, SIZE), CLASSES).parameters())]
    assert without == sorted(ADAPTER_FREE)


def test_ofa_every_branch_is_optimised_and_changes_after_one_step(models):
    teacher, student, x, y, t_rec, s_rec = models
    method = distill.build("ofa", specs(t_rec, SIZE), specs(s_rec, SIZE), CLASSES)
    assert sorted(method.branches) == sorted(s for s in method.stages if s != "logits")
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    opt = torch.optim.SGD(method.parameters(), lr=0.1)
    method(teacher_maps(t_rec, x, method), features(s_rec, x), y)["ofa"].backward()
    for n, p in method.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    opt.step()
    for n, p in method.named_parameters():
        assert not torch.equal(p.detach(), before[n]), n
    student.zero_grad()


def test_ofa_branches_leave_the_student_unchanged(models):
    """The branches belong to the method: the student's parameters, count and inference output are those of
    a student without them, also after the branches have trained."""
    teacher, student, x, y, t_rec, s_rec = models
    count, keys = count_parameters(student), set(student.state_dict())
    with torch.no_grad():
        out = student(x)
    method = distill.build("ofa", specs(t_rec, SIZE), specs(s_rec, SIZE), CLASSES)
    assert count_parameters(method) > 0
    assert not {id(p) for p in method.parameters()} & {id(p) for p in student.parameters()}
    opt = torch.optim.SGD(method.parameters(), lr=0.1)
    method(teacher_maps(t_rec, x, method), features(s_rec, x), y)["ofa"].backward()
    opt.step()
    student.zero_grad()
    assert count_parameters(student) == count and set(student.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(student(x), out, rtol=0, atol=0)


# ------------------------------------------------------------------------ hand computations, tiny inputs

def centred(c: int, n: int, size: int = 4) -> Feature:
    """A map of ``c`` channels, ``n x n`` cells, centred cells on a ``size`` input (shrinking by k is a
    k x k average)."""
    stride = size / n
    return Feature(c, n, n, stride, stride / 2)


def test_dkd_by_hand():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 2, 2, generator=gen), torch.randn(2, 3, 2, 2, generator=gen)
    y = torch.randint(0, 3, (2, 2, 2), generator=gen)
    y[1, 1, 1] = IGNORE
    T, alpha, beta = 2.0, 0.7, 1.3
    logits = {"logits": centred(3, 2)}
    method = distill.build("dkd", logits, logits, 3, temperature=T, alpha=alpha, beta=beta)
    got = method({"logits": t}, {"logits": s}, y)
    tc = nc = 0.0
    n = 0
    for b in range(2):
        for i in range(2):
            for j in range(2):
                g = int(y[b, i, j])
                if g == IGNORE:
                    continue
                n += 1
                ps = [math.exp(v / T) for v in s[b, :, i, j].tolist()]
                pt = [math.exp(v / T) for v in t[b, :, i, j].tolist()]
                ps, pt = [v / sum(ps) for v in ps], [v / sum(pt) for v in pt]
                bs, bt = (ps[g], 1 - ps[g]), (pt[g], 1 - pt[g])
                tc += sum(q * math.log(q / p) for q, p in zip(bt, bs))
                qs = [v for k, v in enumerate(ps) if k != g]
                qt = [v for k, v in enumerate(pt) if k != g]
                qs, qt = [v / sum(qs) for v in qs], [v / sum(qt) for v in qt]
                nc += sum(q * math.log(q / p) for q, p in zip(qt, qs))
    assert n == 7
    assert got["dkd_tc"].item() == pytest.approx(alpha * T * T * tc / n, rel=1e-5)
    assert got["dkd_nc"].item() == pytest.approx(beta * T * T * nc / n, rel=1e-5)


def test_dist_by_hand():
    gen = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(2, 4, 3, 3, generator=gen)
    T, beta, gamma = 2.0, 1.5, 0.5
    logits = {"logits": centred(4, 3, size=3)}
    got = distill.build("dist", logits, logits, 4, temperature=T, beta=beta, gamma=gamma)(
        {"logits": t}, {"logits": s}, torch.zeros(2, 3, 3, dtype=torch.long))
    ps = np.exp(s.double().numpy() / T)
    pt = np.exp(t.double().numpy() / T)
    ps, pt = ps / ps.sum(1, keepdims=True), pt / pt.sum(1, keepdims=True)
    ps, pt = ps.transpose(0, 2, 3, 1).reshape(-1, 4), pt.transpose(0, 2, 3, 1).reshape(-1, 4)
    inter = np.mean([1 - np.corrcoef(a, b)[0, 1] for a, b in zip(ps, pt)])
    intra = np.mean([1 - np.corrcoef(ps[:, c], pt[:, c])[0, 1] for c in range(4)])
    assert got["dist_inter"].item() == pytest.approx(beta * T * T * inter, rel=1e-4)
    assert got["dist_intra"].item() == pytest.approx(gamma * T * T * intra, rel=1e-4)


def test_cka_by_hand_in_sample_space():
    """Against the Gram-matrix form ``tr(KHLH) / sqrt(tr(KHKH) tr(LHLH))``; the student's finer map is
    averaged onto the teacher's grid first."""
    gen = torch.Generator().manual_seed(2)
    tspec, sspec = {"bottleneck": centred(3, 2, size=8)}, {"bottleneck": centred(5, 4, size=8)}
    t, s = torch.randn(2, 3, 2, 2, generator=gen), torch.randn(2, 5, 4, 4, generator=gen)
    got = distill.build("cka", tspec, sspec, 3, weight=2.0, layers=["bottleneck"])(
        {"bottleneck": t}, {"bottleneck": s}, None)["cka"]
    x = t.double().permute(0, 2, 3, 1).reshape(-1, 3)
    y = F.avg_pool2d(s.double(), 2).permute(0, 2, 3, 1).reshape(-1, 5)
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l_ = x @ x.t(), y @ y.t()
    cka = torch.trace(k @ h @ l_ @ h) / torch.sqrt(torch.trace(k @ h @ k @ h) * torch.trace(l_ @ h @ l_ @ h))
    assert got.item() == pytest.approx(2.0 * (1 - cka.item()), rel=1e-5)
    rotated = torch.linalg.qr(torch.randn(3, 3, generator=gen))[0]  # invariant to rotation and scale
    same = distill.build("cka", tspec, tspec, 3, layers=["bottleneck"])(
        {"bottleneck": t}, {"bottleneck": 3 * torch.einsum("bchw,cd->bdhw", t, rotated)}, None)["cka"]
    assert abs(same.item()) < 1e-5


@pytest.mark.parametrize("pool", ["flatten", "mean"])
def test_infoflow_by_hand(pool):
    gen = torch.Generator().manual_seed(3)
    tspec = {"enc_s8": centred(3, 2, size=8), "bottleneck": centred(4, 1, size=8)}
    sspec = {"enc_s8": centred(2, 2, size=8), "bottleneck": centred(6, 1, size=8)}
    t = {n: torch.randn(3, *f.shape, generator=gen) for n, f in tspec.items()}
    s = {n: torch.randn(3, *f.shape, generator=gen) for n, f in sspec.items()}
    got = distill.build("infoflow", tspec, sspec, 3, weight=0.5, pool=pool, layers=["enc_s8", "bottleneck"])(
        t, s, None)["infoflow"]

    def conditional(maps):
        vs = [(m.mean(dim=(1, 2)) if pool == "mean" else m.flatten()).tolist() for m in maps]
        cos = [[sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))
                for v in vs] for u in vs]
        k = [[(c + 1) / 2 for c in row] for row in cos]
        return [[v / sum(row) for v in row] for row in k]

    per_layer = []
    for name in ("enc_s8", "bottleneck"):
        pt, ps = conditional(t[name]), conditional(s[name])
        per_layer.append(sum(sum(q * math.log(q / p) for q, p in zip(rt, rs)) for rt, rs in zip(pt, ps)) / 3)
    assert got.item() == pytest.approx(0.5 * sum(per_layer) / 2, rel=1e-4)


def test_ofa_by_hand():
    """One branch on a stride-2 stage and the output itself: the adaptive target ``(p_t + y)^eps - y`` per
    pixel, judged at the stage's cells by averaging the pixel losses of the pixels each cell covers."""
    gen = torch.Generator().manual_seed(4)
    tspec = {"logits": centred(3, 4)}
    sspec = {"enc_s2": centred(2, 2), "logits": centred(3, 4)}
    t = torch.randn(1, 3, 4, 4, generator=gen)
    s = {"enc_s2": torch.randn(1, 2, 2, 2, generator=gen), "logits": torch.randn(1, 3, 4, 4, generator=gen)}
    y = torch.randint(0, 3, (1, 4, 4), generator=gen)
    y[0, 0, 0] = IGNORE  # no label: the teacher's part only
    eps, T = 1.5, 2.0
    method = distill.build("ofa", tspec, sspec, 3, weight=0.5, eps=eps, temperature=T, stages=["enc_s2", "logits"])
    got = method({"logits": t}, s, y)["ofa"]
    branch = method.branches["enc_s2"]
    stage_logits = F.conv2d(s["enc_s2"], branch.weight, branch.bias, padding=1)

    def loss(zs, k):
        """Mean over pixels of the cross-entropy of the prediction of the k x k cell holding the pixel."""
        total = 0.0
        for i in range(4):
            for j in range(4):
                es = [math.exp(v / T) for v in zs[0, :, i // k, j // k].tolist()]
                et = [math.exp(v / T) for v in t[0, :, i, j].tolist()]
                for c in range(3):
                    label = float(y[0, i, j] == c)
                    target = (et[c] / sum(et) + label) ** eps - label
                    total -= target * math.log(es[c] / sum(es))
        return total / 16

    expected = loss(stage_logits.detach(), 2) + loss(s["logits"], 1)
    assert got.item() == pytest.approx(0.5 * expected, rel=1e-5)


def test_options_are_checked():
    logits = {"logits": centred(3, 4)}
    with pytest.raises(ValueError, match="'infoflow'.*pool"):
        distill.build("infoflow", {"enc_s8": centred(2, 2)}, {"enc_s8": centred(2, 2)}, 3, pool="max",
                      layers=["enc_s8"])
    with pytest.raises(ValueError, match="'ofa'.*'eps' must be positive"):
        distill.build("ofa", logits, logits, 3, eps=0, stages=["logits"])
    with pytest.raises(ValueError, match="'cka'.*no layers"):
        distill.build("cka", logits, logits, 3, layers=[])
    with pytest.raises(ValueError, match="student feature 'dec_s2'"):
        distill.build("ofa", logits, logits, 3, stages=["dec_s2"])
