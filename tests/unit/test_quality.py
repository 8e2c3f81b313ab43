"""A review pass over the test suite itself: no test that cannot fail.

Flags, in every ``test_*.py`` under ``tests/``: ``assert`` on a constant (``assert True``, ``assert "msg"``, a
non-empty tuple), a comparison of two constants or of an expression with itself, and test functions
that check nothing: neither an ``assert`` nor a call that asserts (``ASSERTING_CALLS``, or a function
of the same module that itself asserts).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
FILES = sorted(TESTS.rglob("test_*.py"))

# Calls that fail the test on their own: pytest's context managers and failure, the numeric libraries'
# comparison helpers (matched by the called name's last part).
ASSERTING_CALLS = {"raises", "warns", "fail", "assert_allclose", "assert_array_equal", "assert_equal",
                   "assert_array_almost_equal", "assert_frame_equal", "assert_series_equal", "assert_close"}


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _constant(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_constant(e) for e in node.elts)
    return False


def constant_assertions(tree: ast.Module) -> list[str]:
    """``assert`` statements whose outcome does not depend on the code under test."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assert):
            continue
        test = node.test
        if _constant(test) or (isinstance(test, (ast.Tuple, ast.List)) and test.elts):
            found.append(f"line {node.lineno}: assert on a constant")
        elif isinstance(test, ast.Compare) and len(test.comparators) == 1:
            left, right = test.left, test.comparators[0]
            if _constant(left) and _constant(right):
                found.append(f"line {node.lineno}: comparison of two constants")
            elif ast.dump(left) == ast.dump(right) and not isinstance(left, ast.Call):
                found.append(f"line {node.lineno}: comparison of an expression with itself")
    return found


def _asserts(node: ast.AST, helpers: set[str]) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Assert):
            return True
        if isinstance(sub, ast.Call) and (_called_name(sub) in ASSERTING_CALLS or _called_name(sub) in helpers):
            return True
    return False


def unchecked_tests(tree: ast.Module) -> list[str]:
    """Test functions that neither assert nor call something that does."""
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    helpers: set[str] = set()
    while True:  # helpers that assert, directly or through other such helpers
        more = {f.name for f in functions if not f.name.startswith("test_") and _asserts(f, helpers)}
        if more <= helpers:
            break
        helpers |= more
    return [f"line {f.lineno}: {f.name} asserts nothing" for f in functions
            if f.name.startswith("test_") and not _asserts(f, helpers)]


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(TESTS).as_posix() for p in FILES])
def test_no_assertion_that_cannot_fail(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    findings = constant_assertions(tree) + unchecked_tests(tree)
    assert not findings, f"{path.relative_to(TESTS)}: " + "; ".join(findings)


def test_the_review_flags_what_it_should():
    bad = ast.parse("def test_a():\n    assert True\n\ndef test_b():\n    x = 1\n\ndef test_c():\n"
                    "    assert (x, 'msg')\n\ndef test_d():\n    assert 1 == 1\n\ndef test_e(v):\n"
                    "    assert v.x == v.x\n")
    assert [f.split(":")[0] for f in constant_assertions(bad)] == ["line 2", "line 8", "line 11", "line 14"]
    assert unchecked_tests(bad) == ["line 4: test_b asserts nothing"]
    good = ast.parse("def _check(x):\n    assert x\n\ndef test_a(v):\n    _check(v)\n\ndef test_b():\n"
                     "    with pytest.raises(ValueError):\n        f()\n\ndef test_c(v):\n"
                     "    np.testing.assert_allclose(v, 1)\n\ndef test_d(v):\n    assert f() == f()\n")
    assert constant_assertions(good) == [] and unchecked_tests(good) == []
