"""Networks hkd does not define: a MONAI network by class name, or the user's own class by import path.

``{"arch": "monai", "name": "SwinUNETR", "spatial_dims": 2, ...}`` builds ``monai.networks.nets.SwinUNETR``
with the other keys as constructor arguments (MONAI is the optional extra ``hkd[monai]``).
``{"arch": "module", "name": "package.module:Class", ...}`` imports ``Class`` from ``package.module``
(which must be importable where the jobs run) and builds it the same way. hkd's own keys (see
:data:`hkd.models.SPEC_KEYS`) are never passed to the constructor.
"""

from __future__ import annotations

import importlib
import inspect

from torch import nn

MONAI_EXTRA = "pip install 'hkd[monai]'"


def monai_class(name: str) -> type:
    """The class ``name`` of ``monai.networks.nets``."""
    try:
        nets = importlib.import_module("monai.networks.nets")
    except ImportError:
        raise ImportError(f"arch 'monai' needs MONAI, which is not installed: {MONAI_EXTRA}") from None
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
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"arch 'module': cannot import {module_name!r} ({exc}); it must be importable where the "
                          "jobs run (installed, or on PYTHONPATH)") from None
    cls = getattr(module, attr, None)
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise ValueError(f"arch 'module': {module_name} has no nn.Module class {attr!r}")
    return cls
