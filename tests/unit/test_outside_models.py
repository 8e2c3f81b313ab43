"""Networks hkd did not write, distilled through recorded features: MONAI's SwinUNETR and BasicUNet, and a
user's own module; the recorder on every network: what it records is what the modules return."""

from __future__ import annotations

import copy
import re
import sys
import textwrap

import pandas as pd
import pytest
import torch
import yaml

import hkd.distill as distill
from hkd.explain import gradcam
from hkd.models import build_model, count_parameters, gradcam_layer, model_blocks, recorder_of
from hkd.train.config import TrainConfig
from hkd.train.preflight import check_train_config
from hkd.train.trainer import Run, train

from helpers import REPO, TINY_TEACHER, copy_tracked_files, snakemake, study_config

MONAI_YAML = REPO / "workflow" / "configs" / "monai.yaml"
_STUDY = yaml.safe_load(MONAI_YAML.read_text())
SWIN = _STUDY["teacher"]["model"]
BASICUNET = _STUDY["students"]["models"]["basicunet"]
TINY_SWIN = {**SWIN, "args": {**SWIN["args"], "feature_size": 12, "depths": [1, 1, 1, 1]}}
TINY_BASICUNET = {**BASICUNET, "args": {**BASICUNET["args"], "features": [4, 8, 8, 16, 16, 4]}}
# SwinUNETR needs 64 px and more: its instance norms need more than one cell at stride 32.
SIZE = {"transunet": 32, "squeezeunet": 32, "swinunetr": 64, "basicunet": 32}
NETWORKS = {"transunet": {**TINY_TEACHER, "img_size": 32, "num_classes": 9},
            "squeezeunet": {"arch": "squeezeunet", "width": 0.25, "num_classes": 9},
            "swinunetr": TINY_SWIN, "basicunet": TINY_BASICUNET}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_recorded_features_are_what_their_modules_return(name):
    """Each recorded map equals its module's forward on the input the module received (tokens laid on their
    grid), and recording leaves the model's output unchanged."""
    spec = NETWORKS[name]
    torch.manual_seed(0)
    model = build_model(spec).eval()
    features = recorder_of(model, spec)
    inputs = {}
    for feature, path in features.paths.items():
        model.get_submodule(path).register_forward_pre_hook(
            lambda m, args, feature=feature: inputs.update(
                {feature: [a.clone() if isinstance(a, torch.Tensor) else a for a in args]}))
    x = torch.randn(2, 1, SIZE[name], SIZE[name])
    with torch.no_grad():
        plain = model(x)
        inputs.clear()
        feats = features(x)
        for feature, path in features.paths.items():
            again = model.get_submodule(path)(*inputs[feature])
            if again.dim() == 3:  # tokens (B, N, C) -> (B, C, h, w)
                again = again.transpose(1, 2).reshape(feats[feature].shape)
            assert torch.equal(feats[feature], again), feature
    assert torch.equal(feats["logits"], plain)
    assert set(feats) == {*features.paths, "logits"}


def test_swinunetr_feature_table_at_64_and_224_px():
    specs = {size: recorder_of(build_model(SWIN), SWIN, "teacher").describe(size) for size in (64, 224)}
    for size, table in specs.items():
        assert {n: f.stride for n, f in table.items()} == {
            "enc_s16": 16, "enc_s1": 1, "enc_s2": 2, "enc_s4": 4, "enc_s8": 8, "bottleneck": 32, "dec_s16": 16,
            "dec_s8": 8, "dec_s4": 4, "dec_s2": 2, "dec_s1": 1, "logits": 1}
        assert all(f.offset == f.stride / 2 and f.height == size // f.stride for f in table.values())
    assert [specs[64][n].channels for n in ("enc_s1", "enc_s16", "bottleneck", "logits")] == [12, 96, 192, 9]


LIKE_FEATURE_METHODS = ["logits", "latent", "at", "cwd", "relrep"]


@pytest.mark.parametrize("method", LIKE_FEATURE_METHODS)
@pytest.mark.parametrize("name", ["swinunetr", "basicunet"])
def test_a_student_identical_to_its_teacher_has_zero_loss(method, name):
    """The same MONAI class with the teacher's weights copied: every method comparing like features gives 0."""
    spec = NETWORKS[name]
    torch.manual_seed(0)
    teacher = build_model(spec).eval()
    student = copy.deepcopy(teacher)
    t_rec, s_rec = recorder_of(teacher, spec, "teacher"), recorder_of(student, spec, "student")
    specs = t_rec.describe(64)
    options = {"layers": ["enc_s2", "enc_s4", "bottleneck"]} if method == "at" else {}
    m = distill.build(method, specs, s_rec.describe(64), 9, **options)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        t = t_rec(x, m.teacher_features)
    terms = m(t, s_rec(x), torch.randint(0, 9, (2, 64, 64)))
    assert terms and all(float(v) == pytest.approx(0.0, abs=1e-6) for v in terms.values()), terms


def test_gradcam_on_a_recorded_layer_of_each_monai_network():
    for spec in (TINY_SWIN, TINY_BASICUNET):
        torch.manual_seed(0)
        model = build_model(spec).eval()
        assert gradcam_layer(spec) == spec["gradcam_layer"]
        cam = gradcam(model, torch.rand(1, 1, 64, 64), 3, gradcam_layer(spec))
        assert cam.shape == (64, 64) and cam.max() == 1.0 and cam.min() >= 0


def test_blocks_of_a_network_without_a_table_are_its_top_level_modules():
    model = build_model(TINY_BASICUNET)
    blocks = model_blocks(model, TINY_BASICUNET)
    assert list(blocks) == [n for n, _ in model.named_children()]
    assert sum(p.numel() for ps in blocks.values() for p in ps) == sum(p.numel() for p in model.parameters())


def test_missing_monai_extra_and_bad_specs_are_one_line_errors(monkeypatch):
    with pytest.raises(ValueError, match="no network named 'SwinUNet' in monai.networks.nets; known: .*SwinUNETR"):
        build_model({**SWIN, "name": "SwinUNet"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['spatial_dims'\]; .* go under 'args'"):
        build_model({"arch": "monai", "name": "BasicUNet", "spatial_dims": 2})
    monkeypatch.setitem(sys.modules, "monai.networks.nets", None)  # as if MONAI were not installed
    with pytest.raises(ImportError, match=r"^arch 'monai' needs the monai package, which is not installed: "
                                          r"pip install 'hkd\[monai\]'$"):
        build_model(SWIN)


def test_a_method_asking_for_an_unrecorded_feature_names_model_feature_and_what_it_has():
    student = {k: v for k, v in TINY_BASICUNET.items() if k != "features"}
    cfg = {"model": student, "method": "latent", "teacher": TINY_SWIN, "device": "cpu"}
    with pytest.raises(ValueError, match=r"the student \(monai BasicUNet\) records no feature 'bottleneck', which "
                                         r"distillation method 'latent' needs; it records: logits"):
        check_train_config(cfg, 64, 9)
    wrong = {**TINY_BASICUNET, "args": {**TINY_BASICUNET["args"], "out_channels": 4}}
    with pytest.raises(ValueError, match=r"its logits have 4 channels, but the data has 9 classes"):
        check_train_config({**cfg, "model": wrong}, 64, 9)


def test_a_users_own_module_trains_distilled_from_the_teacher(prepared, teacher_ckpt, tmp_path, monkeypatch):
    """arch: module, imported by path: a plain nn.Module with no hkd code in it, its bottleneck recorded."""
    (tmp_path / "mynets.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class TinyNet(nn.Module):
            def __init__(self, classes, width=4):
                super().__init__()
                self.down = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(16))
                self.up = nn.Upsample(scale_factor=16, mode="bilinear")
                self.head = nn.Conv2d(width, classes, 1)

            def forward(self, x):
                return self.head(self.up(self.down(x)))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    mine = {"arch": "module", "name": "mynets:TinyNet", "args": {"classes": 9},
            "features": {"bottleneck": "down"}}
    cfg = {"model": mine, "method": "latent", "teacher": TINY_TEACHER, "device": "cpu", "epochs": 1,
           "batch_size": 8, "seed": 0}
    run = Run(TrainConfig.from_dict(cfg), prepared, tmp_path / "probe", None, teacher_ckpt, progress=False)
    assert run.method.specs["student"]["bottleneck"].stride == 16
    assert list(model_blocks(run.model, mine)) == ["down", "head"]
    metrics = train(cfg, prepared, tmp_path / "run", teacher_ckpt=teacher_ckpt, progress=False)
    assert metrics["status"] == "completed"
    assert {"gradnorm_latent_l1@down", "gradnorm_seg@head"} <= set(pd.read_csv(tmp_path / "run" / "log.csv").columns)


def test_monai_study_dry_run_plans_every_student():
    run = snakemake(REPO, "-n", "--configfile", str(MONAI_YAML), "--config", "out=results/monai-dry-run")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", run.stdout, re.M))
    assert counts["train_teacher"] == "1" and counts["train_scratch"] == "6" and counts["train_student"] == "12"


@pytest.mark.slow
@pytest.mark.budget(420)  # a SwinUNETR teacher through every rule, its cost measured in two runtimes
def test_tiny_monai_study_end_to_end(tmp_path):
    """SwinUNETR teacher -> BasicUNet and SqueezeUNet students, scratch and latent, through every rule; the
    tables' parameter counts are the networks' own."""
    root = copy_tracked_files(tmp_path)
    tiny = {"data": {"phantom": {"cases": 6, "size": 64, "slices": [4, 6]}, "image_size": 64,
                     "external": {"source": "none"}},  # the external cohort: the shared study's test
            "train": {"epochs": 1, "batch_size": 8, "threads": 1},
            "teacher": {"model": TINY_SWIN, "train": {"epochs": 2}},
            "students": {"widths": ["0.25"], "models": {"basicunet": TINY_BASICUNET}, "seeds": [0],
                         "methods": ["scratch", "latent"], "train": {}},
            "report": {"n_slices": 1, "context_slices": 2},
            "deploy": {"export": False}}  # exporting students is the shared study's test (test_export.py)
    config = study_config(tiny, "results/monai", MONAI_YAML)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(root, "--cores", "2")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    out = root / "results" / "monai"
    summary = pd.read_csv(out / "tables" / "summary.csv", dtype={"preset": str})
    rows = summary.set_index(["method", summary["preset"].fillna("")])["params"]
    basicunet = sum(p.numel() for p in build_model(TINY_BASICUNET).parameters())
    assert rows[("scratch", "basicunet")] == rows[("latent", "basicunet")] == basicunet
    assert rows[("teacher", "")] == count_parameters(build_model(TINY_SWIN))
    assert any((out / "figures").glob("gradcam*")), sorted(p.name for p in (out / "figures").glob("*"))



def test_hkd_features_prints_the_swinunetr_table(capsys):
    from hkd.cli import main

    assert main(["features", "--config", str(MONAI_YAML), "--size", "64"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["bottleneck"] == ["encoder10", "192", "2x2", "32", "16"]
    assert rows["logits"] == ["(output)", "9", "64x64", "1", "0.5"]
    assert main(["features", "--config", str(MONAI_YAML), "--key", "teacher.nothing", "--size", "64"]) == 1
    assert "no key 'teacher.nothing' (missing 'nothing')" in capsys.readouterr().err


def test_the_probe_runs_in_eval_mode_and_restores_training_mode():
    """A batch norm in training mode cannot normalise one value per channel (a 1-slice probe whose deepest
    map is 1x1): the probe runs in eval mode, then the model is as it was."""
    spec = {**yaml.safe_load((REPO / "config.yaml").read_text())["teacher"]["model"], "img_size": 16}
    model = build_model(spec).train()
    specs = recorder_of(model, spec).describe(16)
    assert specs["bottleneck"].height == 1 and model.training


@pytest.mark.parametrize("spec", [TINY_TEACHER, {"arch": "squeezeunet", "width": 0.25, "num_classes": 9},
                                  TINY_SWIN, TINY_BASICUNET], ids=["transunet", "squeezeunet", "swinunetr",
                                                                   "basicunet"])
def test_the_dry_run_probe_measures_what_a_real_forward_pass_measures(spec):
    """describe_spec probes on the meta device (shapes only), falling back to the CPU where a network needs
    values (SwinUNETR's .item()): its table equals a recorder's on a CPU network with weights."""
    from hkd.models import describe_spec

    spec = {**spec, "img_size": 64} if spec["arch"] == "transunet" else spec
    assert describe_spec(spec, 64) == recorder_of(build_model(spec), spec).describe(64)
