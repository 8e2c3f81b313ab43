"""Every registered distillation method trains on real data through the trainer, online or cached."""

from __future__ import annotations

import json

import pytest
import torch

from hkd import distill
from hkd.train.augment import apply, sample_params
from hkd.train.teacher_cache import load_cache, write_cache
from hkd.train.trainer import load_model, load_state, train

from conftest import TINY_TEACHER

STUDENT = {"arch": "squeezeunet", "width": 0.25}
DISTILLED = [m for m in distill.available() if m != "scratch"]


def _cfg(method, **kw):
    return {"model": STUDENT, "epochs": 1, "batch_size": 8, "device": "cpu", "seed": 0, "method": method,
            "teacher": TINY_TEACHER, **kw}


@pytest.mark.parametrize("method", DISTILLED)
def test_every_method_trains_with_the_teacher_online(method, prepared, teacher_ckpt, tmp_path):
    metrics = train(_cfg(method), prepared, tmp_path, teacher_ckpt=teacher_ckpt, progress=False)
    assert metrics["status"] == "completed" and metrics["method"] == method
    import pandas as pd

    log = pd.read_csv(tmp_path / "log.csv")
    extra = set(log.columns) - {"epoch", "lr", "ce", "dice", "loss", "val_dice", "val_iou", "seconds"}
    assert any(not c.startswith("val_dice_") for c in extra), "the method's own loss terms are logged"
    state = load_state(tmp_path / "best.pt")
    assert state["method_name"] == method
    teacher_before = load_state(teacher_ckpt)["model"]
    teacher_after, _ = load_model(teacher_ckpt)
    for k, v in teacher_after.state_dict().items():
        assert torch.equal(v, teacher_before[k]), "the teacher is never updated"


@pytest.mark.parametrize("method", DISTILLED)
def test_every_method_trains_from_a_teacher_cache(method, prepared, teacher_ckpt, tmp_path):
    teacher, _ = load_model(teacher_ckpt)
    names = distill.get(method).required_teacher_features({})
    cache = tmp_path / "cache.h5"
    shapes = write_cache(teacher, prepared, list(names), cache)
    assert set(shapes) == set(names)
    metrics = train(_cfg(method), prepared, tmp_path / "run", teacher_cache=cache, progress=False)
    assert metrics["status"] == "completed"


def test_cache_without_augmentation_matches_the_online_teacher(prepared, teacher_ckpt, tmp_path):
    teacher, _ = load_model(teacher_ckpt)
    write_cache(teacher, prepared, ["logits", "latent"], tmp_path / "c.h5")
    from hkd.data.dataset import load_slices

    data = load_slices(prepared, "train")
    cache = load_cache(tmp_path / "c.h5", ("logits", "latent"), len(data))
    with torch.no_grad():
        online = teacher.forward_features(data.image[:4], names=["logits", "latent"])
    for name in ("logits", "latent"):
        torch.testing.assert_close(cache[name][:4].float(), online[name], rtol=2e-3, atol=2e-3)


def test_cache_of_another_dataset_is_refused(prepared, teacher_ckpt, tmp_path):
    teacher, _ = load_model(teacher_ckpt)
    write_cache(teacher, prepared, ["logits"], tmp_path / "c.h5")
    with pytest.raises(ValueError, match="cache of .* slices, but the training set has 5"):
        load_cache(tmp_path / "c.h5", ("logits",), 5)
    with pytest.raises(ValueError, match=r"teacher features \['latent'\] are not in the cache"):
        load_cache(tmp_path / "c.h5", ("latent",), int(json.loads((prepared / "dataset.json").read_text())
                                                             ["slices"]["train"]))


def test_augmentation_moves_feature_maps_with_the_slice():
    gen = torch.Generator().manual_seed(0)
    params = sample_params(16, gen)
    image = torch.rand(16, 1, 32, 32)
    label = (image[:, 0] > 0.5).long()
    coarse = torch.nn.functional.avg_pool2d(image, 4)  # a feature map at 1/4 resolution
    img_a, coarse_a, label_a = apply(params, image, coarse, label=label)
    rot = params["rot90"]
    # rot90/flip is exact on every grid: pooling the transformed slice equals transforming the pooled map
    torch.testing.assert_close(torch.nn.functional.avg_pool2d(img_a[rot], 4), coarse_a[rot])
    assert torch.equal(label_a[rot], (img_a[rot][:, 0] > 0.5).long())
    assert set(label_a.unique().tolist()) <= {0, 1}


def test_augmentation_keeps_tensors_on_their_device():
    # The "meta" device stands in for a GPU: a rotation grid built on the CPU fails on it as on CUDA.
    params = sample_params(4, torch.Generator().manual_seed(0))
    params["rotate"][:], params["rot90"][:] = True, False
    image = torch.zeros(4, 1, 16, 16, device="meta")
    label = torch.zeros(4, 16, 16, dtype=torch.long, device="meta")
    img_a, label_a = apply(params, image, label=label)
    assert img_a.device.type == label_a.device.type == "meta"
    assert img_a.shape == image.shape and label_a.shape == label.shape
