"""Lock-step cohorts: one teacher pass per batch for every student of a seed, with the numbers of
students trained alone, and a rerun that retrains only the members whose identity changed."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import torch

from hkd.data.dataset import load_slices
from hkd.train.lockstep import train_cohort
from hkd.models.checkpoint import load_state
from hkd.train.trainer import train

from conftest import TINY_TEACHER

STUDENT = {"arch": "squeezeunet", "width": 0.25}


def _cfg(method, model=STUDENT, epochs=1, **kw):
    return {"model": model, "epochs": epochs, "batch_size": 8, "device": "cpu", "seed": 3, "method": method,
            "teacher": TINY_TEACHER, "optimizer": "adamw", "lr": 0.002, "distill_warmup": 1, **kw}


# Scratch, three distilled methods reading different teacher maps, and a student with dropout (a
# TransUNet): its dropout masks come from the global generator, which lock-step must keep per run.
MEMBERS = {"scratch": _cfg("scratch"), "logits": _cfg("logits"), "latent": _cfg("latent"), "hlfd": _cfg("hlfd"),
           "logits_dropout": _cfg("logits", model=TINY_TEACHER)}
TWO_EPOCHS = {name: {**cfg, "epochs": 2} for name, cfg in MEMBERS.items()}  # across an epoch boundary


def _same_run(a, b) -> None:
    for name in ("best.pt", "last.pt"):
        sa, sb = load_state(a / name), load_state(b / name)
        for part in ("model", "method"):
            assert sa[part].keys() == sb[part].keys()
            for key in sa[part]:
                assert torch.equal(sa[part][key], sb[part][key]), (a.name, name, part, key)
    la, lb = pd.read_csv(a / "log.csv"), pd.read_csv(b / "log.csv")
    pd.testing.assert_frame_equal(la.drop(columns="seconds"), lb.drop(columns="seconds"))


def test_a_cohort_trains_every_member_exactly_as_alone_with_one_teacher_pass_per_batch(
        prepared, teacher_ckpt, tmp_path):
    done = train_cohort(TWO_EPOCHS, prepared, tmp_path / "cohort", teacher_ckpt)
    assert all(d["trained"] for d in done["members"].values())
    for name, cfg in TWO_EPOCHS.items():
        alone = tmp_path / "alone" / name
        train(cfg, prepared, alone, teacher_ckpt=None if cfg["method"] == "scratch" else teacher_ckpt,
              progress=False)
        _same_run(tmp_path / "cohort" / name, alone)
    steps = 2 * -(-len(load_slices(prepared, "train")) // 8)  # epochs x batches per epoch
    assert done["teacher_passes"] == steps and done["teacher_reads"] == 4 * steps  # 4 distilled members


def test_a_changed_member_alone_is_retrained(prepared, teacher_ckpt, tmp_path):
    root = tmp_path / "cohort"
    members = {k: MEMBERS[k] for k in ("scratch", "logits", "latent")}
    train_cohort(members, prepared, root, teacher_ckpt)
    before = {name: (root / name / "best.pt").read_bytes() for name in members}
    stamps = {name: (root / name / "metrics.json").stat().st_mtime_ns for name in members}

    changed = {**members, "latent": _cfg("latent", method_options={"weight": 2.0})}
    done = train_cohort(changed, prepared, root, teacher_ckpt)
    assert {n for n, d in done["members"].items() if d["trained"]} == {"latent"}
    for name in ("scratch", "logits"):  # untouched, not rewritten
        assert (root / name / "metrics.json").stat().st_mtime_ns == stamps[name]
        assert (root / name / "best.pt").read_bytes() == before[name]
    alone = tmp_path / "alone"
    train(changed["latent"], prepared, alone, teacher_ckpt=teacher_ckpt, progress=False)
    _same_run(root / "latent", alone)


def test_a_new_teacher_retrains_the_distilled_members_only(prepared, teacher_ckpt, tmp_path):
    root = tmp_path / "cohort"
    members = {k: MEMBERS[k] for k in ("scratch", "logits")}
    train_cohort(members, prepared, root, teacher_ckpt)
    other = tmp_path / "teacher.pt"
    state = load_state(teacher_ckpt)
    state["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, other)
    done = train_cohort(members, prepared, root, other)
    assert {n for n, d in done["members"].items() if d["trained"]} == {"logits"}


def test_an_interrupted_member_is_retrained(prepared, teacher_ckpt, tmp_path):
    root = tmp_path / "cohort"
    members = {k: MEMBERS[k] for k in ("scratch", "logits")}
    train_cohort(members, prepared, root, teacher_ckpt)
    (root / "logits" / "last.pt").unlink()
    shutil.rmtree(root / "scratch")
    done = train_cohort(members, prepared, root, teacher_ckpt)
    assert all(d["trained"] for d in done["members"].values())


def test_the_cli_publishes_every_member_and_names_bad_arguments(prepared, tmp_path, capsys):
    from hkd.cli import main

    members = {"a": _cfg("scratch"), "b": _cfg("scratch", lr=0.001)}
    root, manifest = tmp_path / "cohort", tmp_path / "cohort.json"
    publish = {name: str(tmp_path / "out" / name) for name in members}
    args = ["train-cohort", "--data", str(prepared), "--root", str(root), "--manifest", str(manifest), "--quiet"]
    assert main([*args, "--members", json.dumps(members), "--publish", json.dumps(publish)]) == 0
    for name in members:
        for file in ("best.pt", "log.csv", "metrics.json"):
            assert (tmp_path / "out" / name / file).read_bytes() == (root / name / file).read_bytes()
    assert set(json.loads(manifest.read_text())["members"]) == {"a", "b"}

    capsys.readouterr()
    assert main([*args, "--members", json.dumps(members), "--publish", json.dumps({"c": "x"})]) == 1
    assert "--publish: no member(s) ['c'] in --members" in capsys.readouterr().err
    assert main([*args, "--members", json.dumps({"a": {"epochs": 1}})]) == 1
    assert "--members 'a': missing key(s) ['model']" in capsys.readouterr().err
    assert main([*args, "--members", json.dumps({"a": _cfg("scratch"), "b": _cfg("scratch", seed=4)})]) == 1
    assert "cohort members must share seed" in capsys.readouterr().err
