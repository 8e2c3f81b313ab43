"""Checks a run passes before it trains, also run on every run of a study by the workflow's dry run.

:func:`check_study_runs` (``workflow/rules/common.smk``) checks each run's training config with the code a
run uses, before any data or weights exist (:func:`check_train_config`); a run itself checks its model's
output (:func:`check_output`), its batch size (:func:`check_batch_size`) and its teacher checkpoint
(:func:`check_teacher_spec`) when it starts.
"""

from __future__ import annotations

import json
from pathlib import Path

from hkd import distill
from hkd.distill import MissingFeatureError
from hkd.models import ARCHITECTURES, describe_spec, label
from hkd.models.recorder import OUTPUT
from hkd.train.config import TrainConfig


def run_spec(model: dict, image_size: int, num_classes: int) -> dict:
    """The spec a run builds its model from: the configured model and, for hkd's own networks, the data's
    classes (TransUNet also the slice size); an outside network states its own (checked by
    :func:`check_output`)."""
    arch = ARCHITECTURES.get(str(model.get("arch", "")).lower())
    if arch is None or not arch.takes_classes:  # an unknown arch is refused when the model is built
        return dict(model)
    spec = {**model, "num_classes": num_classes}
    if spec.get("arch") == "transunet":
        spec["img_size"] = image_size
    return spec


def check_output(role: str, spec: dict, specs: dict, num_classes: int, image_size: int) -> None:
    """Refuse a model whose logits do not have one channel per class of the data and the input's size."""
    logits = specs[OUTPUT]
    if logits.channels != num_classes:
        raise ValueError(f"{role} ({label(spec)}): its logits have {logits.channels} channels, but the data has "
                         f"{num_classes} classes (data.classes); set the network's output channels (e.g. out_channels) "
                         "to match")
    if (logits.height, logits.width) != (image_size, image_size):
        raise ValueError(f"{role} ({label(spec)}): its logits are {logits.height}x{logits.width} on a "
                         f"{image_size}x{image_size} input; a segmentation network's logits must have the input's size "
                         "(upsample its output, or name the module that returns full-size logits as feature 'logits')")


def check_batch_size(cfg: TrainConfig) -> None:
    """Refuse a batch size on which the method's terms are always 0 (a method relating a batch's images)."""
    smallest = distill.get(cfg.method).min_batch_size
    if cfg.batch_size < smallest:
        raise ValueError(f"distillation method '{cfg.method}' relates the images of a batch: with batch_size "
                         f"{cfg.batch_size} its term is 0 at every step; use a batch_size of at least {smallest}")


def check_teacher_spec(path: str | Path, spec: dict, configured: dict | None) -> None:
    """Refuse a teacher checkpoint whose model is not the configured teacher (e.g. a student's checkpoint)."""
    if not configured:
        return
    differ = sorted(k for k in configured if json.dumps(spec.get(k)) != json.dumps(configured[k]))
    if differ:
        raise ValueError(f"--teacher {path}: holds a {spec.get('arch')} model ("
                         + ", ".join(f"{k} {spec.get(k)!r}" for k in differ) + "), but the configured teacher has "
                         + ", ".join(f"{k} {configured[k]!r}" for k in differ))


def build_method(method: str, options: dict, teacher_specs: dict, teacher_model: dict | None, student_specs: dict,
                 student_model: dict, num_classes: int):
    """The run's distillation method; a feature the method needs and a model does not record is an error
    naming the model, the feature and what the model records (:class:`~hkd.distill.MissingFeatureError`)."""
    try:
        return distill.build(method, teacher_specs, student_specs, num_classes, **options)
    except MissingFeatureError as exc:
        model = teacher_model if exc.side == "teacher" else student_model
        exc.args = ((f"the {exc.side} ({label(model or {})}) records no feature '{exc.name}', which distillation "
                     f"method '{method}' needs; it records: {', '.join(exc.available) or 'none'} (name a module for "
                     f"'{exc.name}' in its model spec's 'features')"),)
        raise


class ConfigCheckError(ValueError):
    """A training config a run would refuse; ``part`` says which: recipe, batch, model, teacher or method
    (``option``: the method's option, where one is to blame)."""

    def __init__(self, part: str, message: str, option: str | None = None):
        super().__init__(" ".join(message.split()))
        self.part, self.option = part, option


def check_train_config(cfg: dict, image_size: int, num_classes: int, _cache: dict | None = None) -> TrainConfig:
    """Check a training config with the code a run uses, before any data or weights exist: the recipe
    (:meth:`TrainConfig.from_dict`), the student's and the teacher's model specs (:func:`describe_spec`,
    shapes measured without weights, never trained) and the method's options (:func:`hkd.distill.build`).
    ``_cache`` (a dict) keeps feature specs between calls. Raises :class:`ConfigCheckError`."""
    cache = {} if _cache is None else _cache

    def features(part: str, model: dict) -> dict:
        spec = run_spec(model, image_size, num_classes)
        key = json.dumps(spec, sort_keys=True)
        if key not in cache:
            try:
                role = "teacher" if part == "teacher" else "model"
                cache[key] = describe_spec(spec, image_size, role)
                check_output(role, spec, cache[key], num_classes, image_size)
            except (ValueError, TypeError, RuntimeError, ImportError) as exc:
                raise ConfigCheckError(part, str(exc)) from None
        return cache[key]

    try:
        c = TrainConfig.from_dict(cfg)
    except (ValueError, TypeError) as exc:
        raise ConfigCheckError("recipe", str(exc)) from None
    try:
        distill.get(c.method).check_options(c.method_options)
    except distill.OptionError as exc:
        raise ConfigCheckError("method", str(exc), exc.option) from None
    except (ValueError, KeyError) as exc:
        raise ConfigCheckError("method", str(exc).strip('"')) from None
    try:
        check_batch_size(c)
    except ValueError as exc:
        raise ConfigCheckError("batch", str(exc)) from None
    student = features("model", c.model)
    teacher = features("teacher", c.teacher) if c.method != "scratch" else {}
    try:
        build_method(c.method, c.method_options, teacher, c.teacher, student, c.model, num_classes)
    except MissingFeatureError as exc:
        raise ConfigCheckError("teacher" if exc.side == "teacher" else "model", str(exc)) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigCheckError("method", str(exc).strip('"')) from None
    return c


def check_study_runs(runs: list[tuple[str, str, dict]], image_size: int, num_classes: int) -> None:
    """Check every run of a study before it starts (the workflow's dry run): ``runs`` lists
    (recipe section, config key of its model, training config). Errors name the config key."""
    cache: dict = {}
    for section, model_key, cfg in runs:
        try:
            check_train_config(cfg, image_size, num_classes, cache)
        except ConfigCheckError as exc:
            key = {"recipe": f"train or {section}.train", "model": model_key, "teacher": "teacher.model",
                   "batch": f"train.batch_size or {section}.train.batch_size",
                   "method": f"distill.{cfg.get('method')}" + (f".{exc.option}" if exc.option else "")}[exc.part]
            raise ValueError(f"config key {key}: {exc}") from None
