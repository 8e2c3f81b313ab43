"""Optional packages: the extra of hkd that installs each, and the one-line error when one is missing.

A plain ``pip install .`` holds everything the embedded default study runs; an extra adds a package only
a choice the default does not make needs (Synapse downloads, MLflow as tracker, MONAI networks,
OpenVINO as a runtime). hkd
imports those packages through :func:`require`, never by an import statement (a test checks it), so
a missing one is reported by name with the command that installs it, before any work is done.
"""

from __future__ import annotations

import importlib
from importlib.util import find_spec

# top-level module -> (its distribution, the extra of hkd that installs it); pyproject.toml lists the same
EXTRAS = {
    "synapseclient": ("synapseclient", "synapse"),
    "mlflow": ("mlflow-skinny", "mlflow"),
    "monai": ("monai", "monai"),
    "einops": ("einops", "monai"),
    "openvino": ("openvino", "openvino"),
}


class MissingExtra(ImportError):
    """An optional package is not installed (the message names the extra that installs it)."""


def missing(module: str, needed_for: str, otherwise: str = "") -> MissingExtra:
    """The error for ``module`` (dotted names allowed) missing when ``needed_for`` needs it; ``otherwise``:
    the choice that needs no extra, if there is one."""
    dist, extra = EXTRAS[module.partition(".")[0]]
    alternative = f" (or {otherwise})" if otherwise else ""
    return MissingExtra(f"{needed_for} needs the {dist} package, which is not installed: "
                        f"pip install 'hkd[{extra}]'{alternative}")


def installed(module: str) -> bool:
    """Whether the optional ``module`` can be imported (nothing is imported)."""
    try:
        return find_spec(module.partition(".")[0]) is not None
    except (ImportError, ValueError):  # an import hook that refuses the package, or a half-removed one
        return False


def check(module: str, needed_for: str, otherwise: str = "") -> None:
    """Raise :class:`MissingExtra` now if ``module`` is not installed: the check before any work."""
    if module.partition(".")[0] not in EXTRAS:
        raise KeyError(f"{module} is not an optional package of hkd (hkd/extras.py EXTRAS)")
    if not installed(module):
        raise missing(module, needed_for, otherwise)


def require(module: str, needed_for: str, otherwise: str = ""):
    """The optional ``module``, imported; :class:`MissingExtra` naming its extra if it is not installed."""
    check(module, needed_for, otherwise)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:  # installed in part, or blocked by an import hook
        if exc.name is None or exc.name.partition(".")[0] == module.partition(".")[0]:
            raise missing(module, needed_for, otherwise) from None
        raise
