"""Run a command as a plain install (``pip install .``, no extras) would: modules of any installed
distribution outside the closure of ``[project].dependencies`` cannot be imported.

Usage: ``python tests/plain_install.py PYPROJECT -m MODULE ARGS...`` runs MODULE as ``python -m`` does.
A blocked import raises ModuleNotFoundError naming the module and its distribution, just as on a
machine where only the project's own dependencies are installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata as md
import runpy
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def dependency_closure(requirements: list[str]) -> set[str]:
    """Canonical names of the installed distributions these requirements pull in (extras left out)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            continue
        todo.extend(Requirement(r) for r in dist.requires or [])
        for extra in req.extras:  # extras the requirement itself asks for, e.g. pkg[extra]
            todo.extend(Requirement(r) for r in dist.requires or []
                        if Requirement(r).marker is not None and Requirement(r).marker.evaluate({"extra": extra}))
    return seen


class BlockOutside(importlib.abc.MetaPathFinder):
    def __init__(self, blocked: dict[str, str]):
        self.blocked = blocked

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top in self.blocked:
            raise ModuleNotFoundError(f"No module named {fullname!r} (distribution {self.blocked[top]} is not a "
                                      f"dependency of a plain install)", name=fullname)
        return None


def install(pyproject: str) -> set[str]:
    """Block every module whose distributions all lie outside the closure; returns the closure."""
    project = tomllib.loads(open(pyproject, "rb").read().decode())["project"]
    allowed = dependency_closure(project["dependencies"]) | {canonicalize_name(project["name"])}
    blocked = {top: dists[0] for top, dists in md.packages_distributions().items()
               if not any(canonicalize_name(d) in allowed for d in dists)}
    for top in list(blocked):
        if top in sys.modules:  # already imported by the interpreter's own start-up: nothing to block
            del blocked[top]
    sys.meta_path.insert(0, BlockOutside(blocked))
    return allowed


if __name__ == "__main__":
    pyproject, flag, module, *args = sys.argv[1:]
    assert flag == "-m", "usage: plain_install.py PYPROJECT -m MODULE ARGS..."
    install(pyproject)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
