"""Registry of distillation methods: one module per method in this package, registered by name.

Adding a method is adding one file here, named as the method, that defines a :class:`DistillMethod`
subclass decorated with :func:`register`. The names are the package's file names (:func:`available`
reads the folder, imports nothing), and :func:`get` imports only the file of the method it is asked
for, so a run executes the code of its own method and no other (``hkd/workflow_deps.py`` declares
exactly that file as the run's code input).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from hkd.distill.base import DistillMethod, MissingFeatureError, OptionError
from hkd.models.base import FeatureSpecs

#: Modules of this package that are not methods.
SUPPORT = ("base", "functional")

_REGISTRY: dict[str, type[DistillMethod]] = {}


def register(cls: type[DistillMethod]) -> type[DistillMethod]:
    """Class decorator that adds a method to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"distillation method '{cls.name}' registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of all methods: the package's method files, none of them imported."""
    return sorted(p.stem for p in Path(__file__).parent.glob("*.py")
                  if not p.stem.startswith("_") and p.stem not in SUPPORT)


def module_of(name: str) -> str:
    """The module that defines method ``name``."""
    return f"{__name__}.{name}"


def get(name: str) -> type[DistillMethod]:
    """The method class registered as ``name``; imports its file (and no other method's)."""
    if name not in available():
        raise KeyError(f"unknown distillation method '{name}'; available: {', '.join(available())}")
    importlib.import_module(module_of(name))
    if name not in _REGISTRY:
        raise ValueError(f"{module_of(name)} registers no method named '{name}' (a method's file is named "
                         "as the method)")
    return _REGISTRY[name]


def build(name: str, teacher_specs: FeatureSpecs, student_specs: FeatureSpecs, num_classes: int,
          **options) -> DistillMethod:
    """Instantiate method ``name`` for the given teacher and student feature specs."""
    return get(name)(teacher_specs, student_specs, num_classes, **options)


__all__ = ["DistillMethod", "FeatureSpecs", "MissingFeatureError", "OptionError", "register", "available", "get", "build", "module_of"]
