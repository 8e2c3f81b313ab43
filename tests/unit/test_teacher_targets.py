"""The teacher's targets a distilled run receives are what they claim, for every method and augmentation.

These tests use a real (tiny) TransUNet, whose grids are anchored at the top-left and whose position
embeddings tie features to absolute position, so a target that is only approximately the teacher's
(for example a cached map put through the slice's flip) fails them.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from hkd import distill
from hkd.data.dataset import load_slices
from hkd.data.tasks import IGNORE
from hkd.train import augment
from hkd.train.teacher_cache import load_cache, write_cache
from hkd.models import model_blocks, recorder_of
from hkd.models.checkpoint import load_model, load_state
from hkd.train.config import TrainConfig
from hkd.train.trainer import Run, train

from conftest import TINY_TEACHER

STUDENT = {"arch": "squeezeunet", "width": 0.25}
DISTILLED = [m for m in distill.available() if m != "scratch"]
# Methods that compare a student map with the teacher's map of the same name without an adapter in
# between: a student identical to the teacher scores exactly 0. (fitnet's regressor and hlfd's
# projectors and cross-layer pairs compare different things by design.)
LIKE_FEATURES = ["logits", "latent", "at", "cwd", "relrep"]
BRANCHES = {"unchanged": 0, "rot90+flip": 1, "rotation": 2}


def _cfg(method, model=STUDENT, **kw):
    return {"model": model, "epochs": 1, "batch_size": 8, "device": "cpu", "seed": 0, "method": method,
            "teacher": TINY_TEACHER, "optimizer": "adamw", "lr": 0.002, **kw}


def _params(branch: str, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Augmentation parameters with every sample on one branch (several k, flips and angles)."""
    p = augment.sample_params(n, torch.Generator().manual_seed(seed))
    p["rot90"][:] = branch == "rot90+flip"
    p["rotate"][:] = branch == "rotation"
    p["angle"] = torch.linspace(-19.0, 19.0, n)
    assert (augment.branches(p) == BRANCHES[branch]).all()
    return p


def _run(method, prepared, tmp_path, teacher_ckpt=None, teacher_cache=None, **kw):
    cfg = TrainConfig.from_dict(_cfg(method, **kw))
    return Run(cfg, prepared, tmp_path / "run", None, teacher_ckpt, progress=False, teacher_cache=teacher_cache)


def _received_targets(run: Run, idx: torch.Tensor, aug) -> dict[str, torch.Tensor]:
    """The teacher maps the run's method is given in one training step on slices ``idx``."""
    seen = {}
    original = run.method.forward

    def spy(teacher, student, target):
        seen.update({k: v.detach().clone() for k, v in teacher.items()})
        return original(teacher, student, target)

    run.method.forward = spy
    x, y = run.train_set.image[idx], run.train_set.label[idx]
    run._step_losses(x, y, idx, aug)
    run.method.forward = original
    return seen


@pytest.mark.parametrize("branch", list(BRANCHES))
@pytest.mark.parametrize("method", DISTILLED)
def test_online_targets_are_the_live_teacher_on_the_augmented_slice(method, branch, prepared, teacher_ckpt, tmp_path):
    run = _run(method, prepared, tmp_path, teacher_ckpt=teacher_ckpt)
    idx = torch.arange(6)
    params = _params(branch, len(idx))
    received = _received_targets(run, idx, params)
    teacher, spec = load_model(teacher_ckpt)
    with torch.no_grad():
        live = recorder_of(teacher, spec)(augment.apply(params, run.train_set.image[idx]), list(received))
    assert set(received) == set(run.method.teacher_features)
    for name, value in received.items():
        torch.testing.assert_close(value, live[name], rtol=0, atol=0)


@pytest.mark.parametrize("method", DISTILLED)
def test_cached_targets_equal_the_live_teacher_within_float16(method, prepared, teacher_ckpt, tmp_path):
    teacher, spec = load_model(teacher_ckpt)
    names = distill.get(method).required_teacher_features({})
    cache = tmp_path / "cache.h5"
    specs = write_cache(teacher, spec, prepared, list(names), cache)
    run = _run(method, prepared, tmp_path, teacher_cache=cache, augment="none")
    assert run.method.specs["teacher"] == {n: specs[n] for n in names}  # cached grids are the teacher's
    idx = torch.tensor([5, 0, 3, 7])
    received = _received_targets(run, idx, None)
    with torch.no_grad():
        live = recorder_of(teacher, spec)(run.train_set.image[idx], list(received))
    for name, value in received.items():
        scale = live[name].abs().max().item()
        torch.testing.assert_close(value, live[name], rtol=2e-3, atol=2e-3 * scale)


def test_a_cache_is_refused_for_augmented_runs(prepared, teacher_ckpt, tmp_path):
    teacher, spec = load_model(teacher_ckpt)
    write_cache(teacher, spec, prepared, ["logits"], tmp_path / "c.h5")
    with pytest.raises(ValueError, match=r"c\.h5: a teacher cache .* exact only for runs with augment 'none'"):
        _run("logits", prepared, tmp_path, teacher_cache=tmp_path / "c.h5", augment="transunet")


@pytest.mark.parametrize("method", LIKE_FEATURES)
def test_a_student_identical_to_the_teacher_has_zero_distillation_loss(method, prepared, teacher_ckpt, tmp_path):
    """With the teacher's weights copied into a student of the teacher's architecture, every method that
    compares like features gives 0 under every augmentation branch (teacher online) and from the cache."""
    teacher, spec = load_model(teacher_ckpt)
    model = {k: v for k, v in spec.items() if k not in ("num_classes", "img_size")}
    online = _run(method, prepared, tmp_path / "online", teacher_ckpt=teacher_ckpt, model=model)
    cache = tmp_path / "cache.h5"
    write_cache(teacher, spec, prepared, list(distill.get(method).required_teacher_features({})), cache)
    cached = _run(method, prepared, tmp_path / "cached", teacher_cache=cache, model=model, augment="none")
    idx = torch.arange(8)
    for run, branches, tol in ((online, list(BRANCHES), 1e-6), (cached, ["unchanged"], 2e-3)):
        run.model.load_state_dict(teacher.state_dict())
        run.model.eval()  # the teacher runs in eval mode: same batch-norm statistics, no dropout
        for branch in branches:
            aug = None if run is cached else _params(branch, len(idx))
            _, terms = run._step_losses(run.train_set.image[idx], run.train_set.label[idx], idx, aug)
            for name, value in terms.items():
                assert abs(value.item()) <= tol, (branch, name, value.item())


def test_rotated_labels_never_invent_a_class():
    image = torch.rand(6, 1, 32, 32)
    label = torch.randint(1, 4, (6, 32, 32))  # no background anywhere
    params = _params("rotation", 6)
    img_a, label_a = augment.apply(params, image, label=label)
    assert set(label_a.unique().tolist()) <= {1, 2, 3, IGNORE}
    coverage = augment.apply(params, torch.ones(6, 1, 32, 32))[:, 0]  # share of each pixel with a source
    assert (coverage == 0).any()
    assert (label_a[coverage == 0] == IGNORE).all()
    assert (label_a[coverage > 0.999] != IGNORE).all()
    flipped = augment.apply(_params("rot90+flip", 6), image, label=label)[1]
    assert set(flipped.unique().tolist()) <= {1, 2, 3}


def test_ignored_pixels_do_not_count_in_the_segmentation_loss():
    from hkd.train.losses import segmentation_loss

    logits = torch.randn(2, 4, 8, 8)
    label = torch.randint(0, 4, (2, 8, 8))
    masked = label.clone()
    masked[:, :2] = IGNORE
    other = masked.clone()
    other[:, :2] = 3 - label[:, :2]  # different labels under the mask ...
    a, b = segmentation_loss(logits, masked), segmentation_loss(logits[:, :, 2:], label[:, 2:])
    for k in a:  # ... but the masked loss equals the loss of the unmasked part alone
        torch.testing.assert_close(a[k], b[k])
    assert not torch.allclose(segmentation_loss(logits, other)["ce"], a["ce"])


@pytest.mark.parametrize("method", DISTILLED)
def test_every_adapter_is_optimised_and_changes_after_one_step(method, prepared, teacher_ckpt, tmp_path):
    run = _run(method, prepared, tmp_path, teacher_ckpt=teacher_ckpt, distill_warmup=0)
    optimised = {id(p) for g in run.opt.param_groups for p in g["params"]}
    adapters = dict(run.method.named_parameters())
    assert all(id(p) in optimised for p in adapters.values()), "an adapter is missing from the optimizer"
    before = {k: v.detach().clone() for k, v in adapters.items()}
    run.model.train()
    run.method.train()
    run.train_step(torch.arange(8), None)
    for name, p in adapters.items():
        assert not torch.equal(p.detach(), before[name]), f"{method} adapter {name} did not change"


@pytest.mark.parametrize("method", DISTILLED)
def test_every_method_trains_online_and_logs_gradient_norms(method, prepared, teacher_ckpt, tmp_path):
    metrics = train(_cfg(method), prepared, tmp_path, teacher_ckpt=teacher_ckpt, progress=False)
    assert metrics["status"] == "completed" and metrics["method"] == method
    log = pd.read_csv(tmp_path / "log.csv")
    run = _run(method, prepared, tmp_path / "probe", teacher_ckpt=teacher_ckpt)
    _, terms = run._step_losses(run.train_set.image[:2], run.train_set.label[:2], torch.arange(2), None)
    expected = {"gradnorm_seg"} | {f"gradnorm_{t}" for t in terms}
    assert expected <= set(log.columns)
    assert (log[sorted(expected)] > 0).all().all()
    blocks = list(model_blocks(run.model, run.spec))  # and per block of the student, the segmentation loss reaching every one
    assert {f"gradnorm_{t}@{b}" for t in ["seg", *terms] for b in blocks} <= set(log.columns)
    assert (log[[f"gradnorm_seg@{b}" for b in blocks]] > 0).all().all()
    assert set(json.loads((tmp_path / "metrics.json").read_text())) >= {"converged", "convergence", "gradient_flags"}
    assert load_state(tmp_path / "best.pt")["method_name"] == method
    teacher_before = load_state(teacher_ckpt)["model"]
    teacher_after, _ = load_model(teacher_ckpt)
    for k, v in teacher_after.state_dict().items():
        assert torch.equal(v, teacher_before[k]), "the teacher is never updated"


def test_cache_of_another_dataset_is_refused(prepared, teacher_ckpt, tmp_path):
    teacher, spec = load_model(teacher_ckpt)
    write_cache(teacher, spec, prepared, ["logits"], tmp_path / "c.h5")
    with pytest.raises(ValueError, match="cache of .* slices, but the training set has 5"):
        load_cache(tmp_path / "c.h5", ("logits",), 5)
    n_train = int(json.loads((prepared / "dataset.json").read_text())["slices"]["train"])
    with pytest.raises(ValueError, match=r"teacher features \['bottleneck'\] are not in the cache"):
        load_cache(tmp_path / "c.h5", ("bottleneck",), n_train)
    assert len(load_slices(prepared, "train")) == n_train


def test_augmentation_keeps_tensors_on_their_device():
    # The "meta" device stands in for a GPU: a rotation grid built on the CPU fails on it as on CUDA.
    params = augment.sample_params(4, torch.Generator().manual_seed(0))
    params["rotate"][:], params["rot90"][:] = True, False
    image = torch.zeros(4, 1, 16, 16, device="meta")
    label = torch.zeros(4, 16, 16, dtype=torch.long, device="meta")
    img_a, label_a = augment.apply(params, image, label=label)
    assert img_a.device.type == label_a.device.type == "meta"
    assert img_a.shape == image.shape and label_a.shape == label.shape


def test_the_workflow_refuses_a_teacher_cache_for_augmented_students(tmp_path):
    from helpers import REPO, snakemake

    run = lambda *cfg: snakemake(REPO, "-n", "--cores", "1", "--config", f"out={tmp_path}", *cfg)  # noqa: E731
    refused = run("teacher={'cache': ['logits']}")
    assert refused.returncode != 0
    out = refused.stdout + refused.stderr
    assert "teacher.cache" in out and "augment 'none'" in out
    allowed = run("teacher={'cache': ['logits']}", "train={'augment': 'none'}")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "teacher_cache" in allowed.stdout
