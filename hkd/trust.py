"""Which Python modules a model of ``arch: module`` may import: only those the user named.

A file never makes hkd import code. A checkpoint's spec names the module of its network, so loading one
imports that module only when the user named it too: in a training config (:class:`hkd.train.config.TrainConfig`
allows the modules its specs name), in the study's config (the workflow passes the modules its model specs
name to every job in ``HKD_MODULES``), or with ``--allow-module`` of the commands that load checkpoints.
Standard library only: the workflow reads it where torch may be missing.
"""

from __future__ import annotations

import os

ALLOW_ENV = "HKD_MODULES"  # comma-separated modules the user named; child processes inherit it


def spec_modules(obj) -> set[str]:
    """The modules that the ``arch: module`` specs anywhere inside ``obj`` (a config, a spec) name."""
    found = set()
    if isinstance(obj, dict):
        if obj.get("arch") == "module" and isinstance(obj.get("name"), str):
            found.add(obj["name"].partition(":")[0])
        for value in obj.values():
            found |= spec_modules(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            found |= spec_modules(value)
    return found


def allowed_modules() -> set[str]:
    return {n.strip() for n in os.environ.get(ALLOW_ENV, "").split(",") if n.strip()}


def allow_modules(names) -> None:
    """Let ``arch: module`` specs import these modules, in this process and those it starts."""
    names = allowed_modules() | {n for n in names if n}
    if names:
        os.environ[ALLOW_ENV] = ",".join(sorted(names))


def check_allowed(module: str) -> None:
    """Raise, before any import, unless the user named ``module``."""
    if module not in allowed_modules():
        raise ValueError(f"arch 'module': the model asks to import the module {module!r}, which no config or option "
                         f"named, so it was not imported; if you trust it, name it: --allow-module {module} (or "
                         f"{ALLOW_ENV}={module})")
