"""``pytest --module NAME`` (tests/by_module.py): a module's tests are found by its name, from the test files'
own imports and names, for every module of hkd."""

from __future__ import annotations

import subprocess
import sys

from by_module import module_name, module_test_files

from helpers import REPO

TESTS = sorted((REPO / "tests").rglob("test_*.py"))


def _found(module: str) -> set[str]:
    return {p.relative_to(REPO / "tests").as_posix() for p in module_test_files(module, TESTS)}


def test_a_modules_tests_are_its_importers_and_its_namesakes_in_every_folder():
    assert module_name("hkd/infer/runtime.py") == module_name("hkd.infer.runtime") == "hkd.infer.runtime"
    runtime = _found("hkd.infer.runtime")
    assert {"unit/test_infer_runtime.py", "unit/test_predict.py", "hardening/test_deploy_inputs.py"} <= runtime
    assert "unit/test_phantom.py" not in runtime
    assert {"hardening/test_out_lock.py", "hardening/test_train_outputs.py"} <= _found("hkd.lock")
    # a method loaded through the registry: the registry's tests
    assert "unit/test_distill_methods.py" in _found("hkd.distill.hlfd")


def test_every_module_of_hkd_has_tests_found_by_its_name():
    modules = [".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
               for p in sorted((REPO / "hkd").rglob("*.py"))]
    assert [m for m in modules if not _found(m)] == []


def test_the_option_selects_them():
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "--module=hkd/lock.py", "tests/hardening"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    files = {line.split("::")[0] for line in done.stdout.splitlines() if "::" in line}
    assert files == {"tests/hardening/test_out_lock.py", "tests/hardening/test_train_outputs.py"}, files
