"""Registry of distillation methods: one module per method in this package, registered by name.

Adding a method is adding one file here that defines a :class:`DistillMethod` subclass decorated
with :func:`register`; every module in the package is imported when the registry is first used.
"""

from __future__ import annotations

import importlib
import pkgutil

from hkd.distill.base import DistillMethod
from hkd.models.base import FeatureSpecs

_REGISTRY: dict[str, type[DistillMethod]] = {}
_LOADED = False


def register(cls: type[DistillMethod]) -> type[DistillMethod]:
    """Class decorator that adds a method to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"distillation method '{cls.name}' registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            if info.name != "base":
                importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True


def available() -> list[str]:
    """Names of all registered methods."""
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> type[DistillMethod]:
    """The method class registered as ``name``."""
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown distillation method '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build(name: str, teacher_specs: FeatureSpecs, student_specs: FeatureSpecs, num_classes: int,
          **options) -> DistillMethod:
    """Instantiate method ``name`` for the given teacher and student feature specs."""
    return get(name)(teacher_specs, student_specs, num_classes, **options)


__all__ = ["DistillMethod", "FeatureSpecs", "register", "available", "get", "build"]
