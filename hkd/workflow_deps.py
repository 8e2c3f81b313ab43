"""The ``hkd`` source files one job executes, read from the package's own import statements.

The workflow declares these files as inputs of the job, so editing one reruns exactly the jobs that
run it. Nothing is imported here (no torch): the files are parsed with :mod:`ast`. :mod:`modulefinder`
would also follow third-party imports and cannot see the registries' imports by name, hence this small
walker over ``hkd`` alone.

``hkd <command>`` runs the dispatcher ``hkd/cli.py`` (all of it), the command's module of
:mod:`hkd.commands` (named in the dispatcher's ``COMMANDS`` table): that module's top level, its
``parser_<command>`` and ``cmd_<command>`` functions and the functions of the module they call, and
the transitive closure of those imports at any depth (in other modules a function-level import runs
when the function does, which cannot be known statically, so it counts). Importing ``hkd.a.b`` also
runs ``hkd/__init__.py`` and ``hkd/a/__init__.py``.

A registry imports modules by name at run time (``importlib.import_module``): the distillation methods
(``hkd/distill/__init__.py``), the source readers (``hkd/data/readers/__init__.py``) and downloaders
(``hkd/data/downloaders/__init__.py``), each every module of its package; a registry that is a module,
not a package, the ``hkd.*`` module names written in it. A job names the modules it makes a
registry load (``loads``: its method, its reader); of a registry's modules only those count then.
A registry that a job names nothing for counts as loading all of its modules.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "hkd"
DISPATCHER = f"{PACKAGE}/cli.py"
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
    """Whether a module imports modules by name at run time."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and (owner.id, node.func.attr) in _DYNAMIC:
                return True
    return False


def _registry_modules(root: Path, path: Path, tree: ast.AST) -> set[Path]:
    """The modules a registry may import by name: for a package's ``__init__.py``, every module of the
    package; for a module, the ``hkd`` modules whose names it spells out as strings."""
    if path.name == "__init__.py":
        return {p for p in path.parent.glob("*.py") if p != path}
    named = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    return {f for name in named if name.startswith(f"{PACKAGE}.") and (f := _module_file(root, name)) is not None}


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def _parse(path: Path) -> ast.Module:
    """The file's syntax tree, parsed once per content (a process that plans several times, such as the
    test suite's in-process dry runs, sees an edited file anew)."""
    return _parse_stamped(path, _stamp(path))


@lru_cache(maxsize=None)
def _parse_stamped(path: Path, stamp: tuple[int, int]) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@lru_cache(maxsize=None)
def _file_imports(path: Path, stamp: tuple[int, int], root: Path) -> tuple[frozenset[str], bool]:
    """What running the file ``path`` may import: the modules its import statements name, and whether it
    loads modules by name (a registry). Walked once per content: every command's closure reads these."""
    tree = _parse_stamped(path, stamp)
    names = frozenset(_imported_names(tree, _module_name(root, path), path.name == "__init__.py"))
    return names, _is_dynamic(tree)


def _with_parents(root: Path, name: str) -> set[Path]:
    """The file of ``name`` and the ``__init__.py`` of every package above it (which run first)."""
    parts = name.split(".")
    files = set()
    for i in range(1, len(parts) + 1):
        path = _module_file(root, ".".join(parts[:i]))
        if path is not None:
            files.add(path)
    return files


def _closure(root: Path, start: set[str], loads: set[Path], opaque: frozenset[Path] = frozenset()) -> set[Path]:
    """The files that importing ``start`` runs; a registry loads only its modules in ``loads`` (all of
    them if none is); an ``opaque`` file is counted but its imports are not followed."""
    todo = [f for name in start for f in _with_parents(root, name)]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path in opaque:
            continue
        imported, dynamic = _file_imports(path, _stamp(path), root)
        for name in imported:
            todo.extend(_with_parents(root, name))
        if dynamic:
            registry = _registry_modules(root, path, _parse(path))
            for loaded in registry & loads or registry:  # with the packages above it
                todo.extend(_with_parents(root, _module_name(root, loaded)))
    return seen


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _top_level(tree: ast.Module) -> ast.Module:
    return ast.Module(body=[n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                       ast.ClassDef))], type_ignores=[])


def command_table(root: str | Path) -> dict[str, str]:
    """The dispatcher's ``COMMANDS``: command -> the module that defines it."""
    tree = _parse(Path(root).resolve() / DISPATCHER)
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "COMMANDS" for t in targets):
                return ast.literal_eval(node.value)
    raise ValueError(f"{DISPATCHER} has no COMMANDS table")


def _command_start(root: Path, command: str) -> tuple[Path, set[str]]:
    """The command's module and what its command runs there: the modules imported at its top level and
    by ``parser_<command>``, ``cmd_<command>`` and the functions of the module they call."""
    table = command_table(root)
    if command not in table:
        raise ValueError(f"{DISPATCHER} has no command '{command}' (COMMANDS: {', '.join(table)})")
    path = _module_file(root, table[command])
    if path is None:
        raise ValueError(f"{DISPATCHER}: the module {table[command]} of command '{command}' does not exist")
    tree, name = _parse(path), table[command]
    functions = _functions(tree)
    entry = [f"{kind}_{command.replace('-', '_')}" for kind in ("parser", "cmd")]
    missing = [f for f in entry if f not in functions]
    if missing:
        raise ValueError(f"{path.relative_to(root)} has no function {missing[0]} for the command '{command}'")
    start = _imported_names(_top_level(tree), name, False)
    todo, done = [functions[f] for f in entry], set()
    while todo:
        func = todo.pop()
        if func.name in done:
            continue
        done.add(func.name)
        start |= _imported_names(func, name, False)
        todo.extend(functions[n.func.id] for n in ast.walk(func)
                    if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in functions)
    return path, start


def _package_stamp(root: Path) -> tuple:
    """The package's files with their modification times and sizes: a key that changes with any edit."""
    return tuple((p, *_stamp(p)) for p in sorted((root / PACKAGE).rglob("*.py")))


@lru_cache(maxsize=None)
def _command_modules(command: str, root: Path, loads: frozenset[str], package: tuple) -> tuple[str, ...]:
    module, start = _command_start(root, command)
    load_files = {f for name in loads for f in _with_parents(root, name)} | {module}
    # the dispatcher loads the command's module, whose own part was read by _command_start
    files = _closure(root, start | {f"{PACKAGE}.cli"}, load_files, opaque=frozenset({module}))
    return tuple(sorted(str(p.relative_to(root)) for p in files))


def command_modules(command: str, root: str | Path, loads=()) -> list[str]:
    """Paths (relative to ``root``, the folder holding ``hkd/``) of the modules ``hkd <command>`` executes
    when it makes the registries load the modules ``loads`` (dotted names, e.g. ``hkd.distill.hlfd``)."""
    root = Path(root).resolve()
    return list(_command_modules(command, root, frozenset(loads), _package_stamp(root)))


def package_modules(root: str | Path) -> list[str]:
    """Every module of the ``hkd`` package, relative to ``root``."""
    root = Path(root).resolve()
    return sorted(str(p.relative_to(root)) for p in (root / PACKAGE).rglob("*.py"))
