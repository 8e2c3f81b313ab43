"""A module's tests, found by its name (a pytest plugin, loaded by ``conftest.py``):

    python -m pytest -q --module hkd.deploy.export      # --module repeats

(a path needs the ``=``: ``--module=hkd/deploy/export.py``) keeps the test files that import the module
(``import hkd.deploy.export``, ``from hkd.deploy.export import ...``, ``from hkd.deploy import export``) or are
named after it (``test_export.py``, ``test_deploy_export.py``), whatever their folder: a module's unit tests,
its hardening tests and the workflow tests that call it. A module loaded through its package's registry (a
distillation method, a figure) has its package's tests. Derived from the test files' own imports, so nothing
keeps a list by hand. Tests that reach a module only through the ``hkd`` command line or a workflow run are
found by the command's module (``--module hkd.commands.deploy``) or by their file name.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--module", action="append", default=[], metavar="NAME",
                     help="run only the tests of this hkd module (dotted name or path; repeatable)")


def module_name(name: str) -> str:
    """``hkd/deploy/export.py`` or ``hkd.deploy.export`` -> ``hkd.deploy.export``."""
    name = name.strip()
    if name.endswith(".py") or "/" in name:
        name = name.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    return name


@lru_cache(maxsize=None)
def imported_modules(path: Path) -> frozenset[str]:
    """The hkd modules a test file imports, at any depth (``from hkd.x import y``: both hkd.x and hkd.x.y)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return frozenset(n for n in names if n == "hkd" or n.startswith("hkd."))


def tests_of(module: str, path: Path) -> bool:
    """Whether the test file ``path`` is one of ``module``'s."""
    parts = module.split(".")
    named = {f"test_{parts[-1]}.py", f"test_{'_'.join(parts[1:])}.py"} if len(parts) > 1 else set()
    return path.name in named or module in imported_modules(path)


def module_test_files(module: str, files: list[Path]) -> list[Path]:
    """The test files of ``module`` among ``files``; for a module no file imports or is named after (a
    distillation method or a figure, loaded through its package's registry), its package's, the nearest
    package that has some."""
    while True:
        found = [path for path in files if tests_of(module, path)]
        if found or "." not in module:
            return found
        module = module.rsplit(".", 1)[0]


def pytest_collection_modifyitems(config, items):
    modules = [module_name(m) for m in config.getoption("module")]
    if not modules:
        return
    files = sorted({Path(item.path) for item in items})
    chosen = {path for m in modules for path in module_test_files(m, files)}
    keep, drop = [], []
    for item in items:
        (keep if Path(item.path) in chosen else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if not keep:
        raise pytest.UsageError(f"--module {', '.join(modules)}: no test file imports it or is named after it")
