"""The training config: the workflow schema's recipe and :class:`TrainConfig` state the same keys,
defaults, types, choices and bounds, and the optimisers and schedules are tables whose unknown names
are refused with the config key."""

from __future__ import annotations

from dataclasses import MISSING, fields

import pytest
import torch
import yaml

from helpers import REPO
from hkd.train.config import AUGMENTS, PRECISIONS, TrainConfig
from hkd.train.losses import LOSSES
from hkd.train.optimizers import OPTIMIZERS, SCHEDULES, build_optimizer, learning_rate

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
WORKFLOW_ONLY = {"threads", "tracker"}  # the workflow's own train keys, never passed to a run
PER_RUN = {"model", "method", "method_options", "teacher", "seed", "device"}  # set per run by the workflow
CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "loss": LOSSES, "augment": AUGMENTS,
           "precision": PRECISIONS}
KINDS = {"integer": "int", "number": "float", "boolean": "bool"}
MODEL = {"arch": "squeezeunet", "width": 0.25}


def _schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())["properties"]


def _recipe() -> dict:
    return {k: v for k, v in _schema()["train"]["properties"].items() if k not in WORKFLOW_ONLY}


def _defaults() -> dict:
    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


def test_the_schema_recipe_has_the_dataclass_keys_defaults_and_types():
    recipe, defaults = _recipe(), _defaults()
    assert set(recipe) == {f.name for f in fields(TrainConfig)} - PER_RUN
    for key, rule in recipe.items():
        assert rule["default"] == defaults[key], key
        kind = {f.name: f.type for f in fields(TrainConfig)}[key]
        if "enum" in rule:
            assert kind == "str" and sorted(rule["enum"]) == sorted(CHOICES[key]), key
        else:
            assert KINDS[rule["type"]] == kind, key


def test_the_overrides_have_the_recipe_rules_without_defaults():
    """``teacher.train`` and ``students.train`` (the ``&train_overrides`` anchor) take every recipe key,
    with the recipe's rule and no default (an override absent is the shared value)."""
    schema, recipe = _schema(), _recipe()
    expected = {k: {c: v for c, v in rule.items() if c not in ("default", "description")}
                for k, rule in recipe.items()}
    for section in ("teacher", "students"):
        assert schema[section]["properties"]["train"]["properties"] == expected, section


def _bounds():
    for key, rule in _recipe().items():
        step = 1 if rule.get("type") == "integer" else 0.5
        if "minimum" in rule:
            yield key, rule["minimum"], rule["minimum"] - step
        if "exclusiveMinimum" in rule:
            yield key, rule["exclusiveMinimum"] + step, rule["exclusiveMinimum"]
        if "maximum" in rule:
            yield key, rule["maximum"], rule["maximum"] + step


@pytest.mark.parametrize("key, inside, outside", list(_bounds()))
def test_the_dataclass_enforces_the_schema_bounds(key, inside, outside):
    cfg = {"model": MODEL, "lr": 1.0, key: inside}  # lr 1: min_lr may also go up to lr
    assert getattr(TrainConfig.from_dict(cfg), key) == inside
    with pytest.raises(ValueError, match=f"invalid value for {key}"):
        TrainConfig.from_dict({**cfg, key: outside})


def test_unknown_names_are_refused_naming_the_key_and_the_known_names():
    with pytest.raises(ValueError, match=r"optimizer='rmsprop' \(one of sgd, adamw, adam\)"):
        TrainConfig.from_dict({"model": MODEL, "optimizer": "rmsprop"})
    with pytest.raises(ValueError, match=r"schedule='step' \(one of poly, cosine\)"):
        TrainConfig.from_dict({"model": MODEL, "schedule": "step"})
    unchecked = TrainConfig(model=MODEL, optimizer="rmsprop", schedule="step")  # built without from_dict
    with pytest.raises(ValueError, match="training config key optimizer: unknown optimizer 'rmsprop'; known: adam, "
                                         "adamw, sgd"):
        build_optimizer(unchecked, [torch.nn.Parameter(torch.zeros(2))], torch.device("cpu"))
    with pytest.raises(ValueError, match="training config key schedule: unknown schedule 'step'; known: cosine, poly"):
        learning_rate(unchecked, 0, 10)


@pytest.mark.parametrize("name, kind", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                        ("adamw", torch.optim.AdamW)])
def test_each_optimizer_is_built_with_the_recipe(name, kind):
    cfg = TrainConfig.from_dict({"model": MODEL, "optimizer": name, "lr": 0.02, "weight_decay": 0.001,
                                 "momentum": 0.5, "fused": False})
    opt = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(2))], torch.device("cpu"))
    group = opt.param_groups[0]
    assert type(opt) is kind and group["lr"] == 0.02 and group["weight_decay"] == 0.001
    assert group.get("momentum", 0.5) == 0.5 and not group.get("fused")
    fused = build_optimizer(TrainConfig.from_dict({"model": MODEL, "optimizer": name}),
                            [torch.nn.Parameter(torch.zeros(2))], torch.device("cpu"))
    assert fused.param_groups[0]["fused"] is True


def test_the_schedules_start_at_lr_and_end_at_their_floor():
    poly = TrainConfig.from_dict({"model": MODEL, "lr": 0.01, "poly_power": 0.9})
    cosine = TrainConfig.from_dict({"model": MODEL, "lr": 0.01, "schedule": "cosine", "min_lr": 0.001})
    assert learning_rate(poly, 0, 10) == 0.01 and learning_rate(cosine, 0, 10) == pytest.approx(0.01)
    assert learning_rate(poly, 10, 10) == 0.0 and learning_rate(cosine, 10, 10) == pytest.approx(0.001)
    assert learning_rate(poly, 5, 10) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert learning_rate(cosine, 5, 10) == pytest.approx(0.001 + 0.5 * 0.009)


def test_a_table_entry_makes_a_name_valid(monkeypatch):
    """The tables are the only list of names: an added entry is accepted and used."""
    monkeypatch.setitem(OPTIMIZERS, "nesterov", lambda params, cfg, fused: torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True))
    monkeypatch.setitem(SCHEDULES, "constant", lambda cfg, step, total: cfg.lr)
    cfg = TrainConfig.from_dict({"model": MODEL, "optimizer": "nesterov", "schedule": "constant"})
    opt = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(2))], torch.device("cpu"))
    assert opt.param_groups[0]["nesterov"] is True and learning_rate(cfg, 9, 10) == cfg.lr
