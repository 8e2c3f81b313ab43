"""Networks hkd does not define: a MONAI network by class name, or the user's own class by import path.

``{"arch": "monai", "name": "SwinUNETR", "spatial_dims": 2, ...}`` builds ``monai.networks.nets.SwinUNETR``
with the other keys as constructor arguments (MONAI is the optional extra ``hkd[monai]``).
``{"arch": "module", "name": "package.module:Class", ...}`` imports ``Class`` from ``package.module``
(which must be importable where the jobs run) and builds it the same way. hkd's own keys (see
:data:`hkd.models.SPEC_KEYS`) are never passed to the constructor.

A module is imported only when the user named it (:mod:`hkd.trust`): a checkpoint asking for any other
is refused in one line, before the import.
"""

from __future__ import annotations

import importlib
import inspect

from torch import nn

from hkd import extras
from hkd.trust import check_allowed


def one_line(exc: BaseException) -> str:
    """An exception as ``Type: first line of its message``."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    first = (str(text).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def argument_problems(cls: type, args: dict) -> list[str]:
    """Constructor arguments given as a text where the parameter's default is a number or true/false (e.g.
    ``classes: "nine"`` where the default is 9) and its annotation, if any, does not admit a text; the
    network's own code would fail on them with an error deep inside torch. Nothing else is checked."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return []
    problems = []
    for name, value in args.items():
        param = params.get(name)
        if param is None or not isinstance(value, str) or not isinstance(param.default, (bool, int, float)):
            continue
        annotation = param.annotation
        if annotation is not inspect.Parameter.empty and "str" in str(annotation):
            continue
        kind = "true or false" if isinstance(param.default, bool) else "a number"
        problems.append(f"args.{name} is {value!r}, a text, but {cls.__name__}'s parameter {name} takes {kind} "
                        f"(its default: {param.default!r})")
    return problems


def monai_class(name: str) -> type:
    """The class ``name`` of ``monai.networks.nets``."""
    nets = extras.require("monai.networks.nets", "arch 'monai'")
    cls = getattr(nets, str(name), None)
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        known = sorted(n for n in dir(nets) if inspect.isclass(getattr(nets, n)) and issubclass(getattr(nets, n), nn.Module))
        raise ValueError(f"arch 'monai': no network named {name!r} in monai.networks.nets; known: {', '.join(known)}")
    return cls


def module_class(path: str) -> type:
    """The class named by ``"package.module:Class"``."""
    module_name, _, attr = str(path).partition(":")
    if not module_name or not attr:
        raise ValueError(f"arch 'module': name must be 'package.module:Class', got {path!r}")
    check_allowed(module_name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"arch 'module': cannot import {module_name!r} ({exc}); it must be importable where the "
                          "jobs run (installed, or on PYTHONPATH)") from None
    except Exception as exc:  # the module's own code failed (SyntaxError, NameError, ...): its error, in one line
        raise ImportError(f"arch 'module': importing {module_name!r} raised {one_line(exc)}") from None
    cls = getattr(module, attr, None)
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise ValueError(f"arch 'module': {module_name} has no nn.Module class {attr!r}")
    return cls
