"""The ``hkd`` source files each CLI command executes, read from the package's own import statements.

The workflow declares these files as inputs of the rule that runs the command, so editing one reruns
exactly the rules whose command imports it. Nothing is imported here (no torch): the files are parsed
with :mod:`ast`. :mod:`modulefinder` would also follow third-party imports and cannot see the
registry's dynamic imports, hence this small walker over ``hkd`` alone.

A command executes ``hkd/cli.py``, the modules its ``cmd_<name>`` function (and the ``cli.py``
helpers it calls) imports, ``cli.py``'s module-level imports, and the transitive closure of those
modules' ``hkd`` imports at any depth (a function-level import runs when the function does, which
cannot be known statically, so it counts). Importing ``hkd.a.b`` also runs ``hkd/__init__.py`` and
``hkd/a/__init__.py``. A package that imports its own modules at run time (``pkgutil.iter_modules``
or ``importlib.import_module``, as the distillation registry does) counts as importing all of them.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "hkd"
_DYNAMIC = {("pkgutil", "iter_modules"), ("pkgutil", "walk_packages"), ("importlib", "import_module")}


def _module_file(root: Path, name: str) -> Path | None:
    """The file of dotted module ``name`` (``hkd.x.y``) under ``root``, or None if there is none."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imported_names(node: ast.AST, current: str, is_package: bool) -> set[str]:
    """Dotted names of the modules imported by the import statements inside ``node``."""
    names: set[str] = set()
    for stmt in ast.walk(node):
        if isinstance(stmt, ast.Import):
            names.update(alias.name for alias in stmt.names)
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level:  # relative: resolve against the current package
                package = current.split(".") if is_package else current.split(".")[:-1]
                package = package[: len(package) - (stmt.level - 1)]
                base = ".".join(package + ([stmt.module] if stmt.module else []))
            else:
                base = stmt.module or ""
            names.add(base)
            # `from hkd.x import y` imports the submodule hkd.x.y when y is one
            names.update(f"{base}.{alias.name}" for alias in stmt.names)
    return names


def _is_dynamic(tree: ast.AST) -> bool:
    """Whether a module imports modules of its own package by name at run time."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and (owner.id, node.func.attr) in _DYNAMIC:
                return True
    return False


@lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _with_parents(root: Path, name: str) -> set[Path]:
    """The file of ``name`` and the ``__init__.py`` of every package above it (which run first)."""
    parts = name.split(".")
    files = set()
    for i in range(1, len(parts) + 1):
        path = _module_file(root, ".".join(parts[:i]))
        if path is not None:
            files.add(path)
    return files


def _closure(root: Path, start: set[str]) -> set[Path]:
    todo = [f for name in start for f in _with_parents(root, name)]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = _parse(path)
        name = _module_name(root, path)
        is_package = path.name == "__init__.py"
        for imported in _imported_names(tree, name, is_package):
            todo.extend(_with_parents(root, imported))
        if is_package and _is_dynamic(tree):
            todo.extend(p for p in path.parent.glob("*.py") if p != path)
    return seen


def command_function(cli: ast.Module, command: str) -> ast.FunctionDef:
    """The ``cmd_<command>`` function of ``hkd/cli.py`` (dashes become underscores)."""
    wanted = "cmd_" + command.replace("-", "_")
    for node in cli.body:
        if isinstance(node, ast.FunctionDef) and node.name == wanted:
            return node
    raise ValueError(f"hkd/cli.py has no function {wanted} for the command '{command}'")


def command_modules(command: str, root: str | Path) -> list[str]:
    """Paths (relative to ``root``, the folder holding ``hkd/``) of the modules ``hkd <command>`` executes."""
    root = Path(root).resolve()
    cli_path = root / PACKAGE / "cli.py"
    cli = _parse(cli_path)
    functions = {n.name: n for n in cli.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    # cli.py at module level (its top-level imports), then the command and the cli helpers it calls
    top_level = ast.Module(body=[n for n in cli.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))],
                           type_ignores=[])
    start = _imported_names(top_level, f"{PACKAGE}.cli", False)
    todo, done = [command_function(cli, command)], set()
    while todo:
        func = todo.pop()
        if func.name in done:
            continue
        done.add(func.name)
        start |= _imported_names(func, f"{PACKAGE}.cli", False)
        todo.extend(functions[n.id] for n in ast.walk(func) if isinstance(n, ast.Name) and n.id in functions)
    files = _closure(root, start) | {cli_path, root / PACKAGE / "__init__.py"}
    return sorted(str(p.relative_to(root)) for p in files)


def package_modules(root: str | Path) -> list[str]:
    """Every module of the ``hkd`` package, relative to ``root``."""
    root = Path(root).resolve()
    return sorted(str(p.relative_to(root)) for p in (root / PACKAGE).rglob("*.py"))
