"""How the suite spends its time, and a tripwire on it (a pytest plugin, loaded by ``conftest.py``).

Every test is given a kind, recorded as the JUnit property ``kind`` (``--junitxml``), which
``benchmarks/test_times.py`` tabulates:

* ``install``: resolves the project's installs with pip (marked ``install``);
* ``study``: its set-up or body ran workflow jobs (``helpers.snakemake`` without a planning flag), such
  as building a shared study;
* ``dry run``: it planned workflows only (dry runs, rule graphs, lint);
* ``unit``: neither.

The tripwire: a test whose set-up and body take longer than its kind's budget (``BUDGETS``, seconds on
2 busy cores) fails in CI (``CI=true``), saying by how much, so a slow test is made deliberately: a test
that needs more names its own budget with ``@pytest.mark.budget(seconds)``. Elsewhere (a machine busy
with other work makes every test slower) it passes and the summary lists it under its own heading. ``HKD_TEST_BUDGET_SCALE`` multiplies every
budget (a slower machine: 2; ``0`` turns the tripwire off); measuring coverage (``--cov``) doubles them.

Tests that share a study, or any other fixture built once per module or session, are kept in one
``pytest-xdist`` worker (``--dist loadgroup``), so it is built once per run.
"""

from __future__ import annotations

import os
import time

import pytest

import helpers

BUDGETS = {"unit": 30.0, "dry run": 40.0, "study": 240.0, "install": 120.0}
SCALE = float(os.environ.get("HKD_TEST_BUDGET_SCALE", "1"))
# An over-budget test fails only in CI (CI=true, as .ci/run sets it); elsewhere the summary lists it.
STRICT = os.environ.get("CI", "").lower() == "true"
# Session fixtures that build a study: their tests share one xdist worker.
SHARED_STUDIES = ("default_study",)


def pytest_configure(config):
    global SCALE
    if getattr(config.option, "cov_source", None):  # pytest-cov traces every line: slower, not a slower test
        SCALE *= 2
    config.addinivalue_line("markers", "budget(seconds): this test's own time budget (tests/timing.py)")
    config.addinivalue_line("markers", "install: resolves the project's installs with pip")


def shared_group(item) -> str | None:
    """The xdist group of a test: the shared study it reads, else its module if a fixture of its is built
    once per module (the others are cheap to build once per worker)."""
    names = getattr(item, "fixturenames", ())
    for name in SHARED_STUDIES:
        if name in names:
            return name
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info else ()
    if any(d[-1].scope == "module" for d in defs):
        return item.module.__name__
    return None


def runs_long(item) -> bool:
    """Whether a test runs workflow jobs or shares a study (marked ``slow``, or in a shared study's group)."""
    return item.get_closest_marker("slow") is not None or shared_group(item) in SHARED_STUDIES


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    """Keep the tests sharing a fixture in one worker, and hand out the long tests first: pytest-xdist gives
    the workers tests in collection order, so a long test collected last would leave the other worker idle
    at the end while the short ones fill the gaps when they come last (the order otherwise as collected)."""
    for item in items:
        group = shared_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: not runs_long(item))


def kind(item, calls: list[str]) -> str:
    if item.get_closest_marker("install"):
        return "install"
    if "run" in calls:
        return "study"
    return "dry run" if "plan" in calls else "unit"


def budget(item, test_kind: str) -> float:
    marker = item.get_closest_marker("budget")
    return (marker.args[0] if marker else BUDGETS[test_kind]) * SCALE


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    helpers.CALLS.clear()
    item._hkd_started = time.perf_counter()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    if call.when == "call":
        item._hkd_kind = kind(item, helpers.CALLS)
        item._hkd_seconds = time.perf_counter() - item._hkd_started
        item.user_properties.append(("kind", item._hkd_kind))
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or not report.passed or not SCALE:
        return
    allowed = budget(item, item._hkd_kind)
    if item._hkd_seconds > allowed:
        text = (f"{item.nodeid} took {item._hkd_seconds:.1f} s (set-up and body), over the {allowed:.1f} s budget "
                f"of a '{item._hkd_kind}' test")
        if STRICT:
            report.outcome = "failed"
            report.longrepr = (f"{text}: make it faster or shared, or give it its own budget with "
                               "@pytest.mark.budget(seconds) (tests/timing.py)")
        else:  # a busy machine makes any test slow: said in the summary, failed only in CI
            report.user_properties.append(("over_budget", text))


OVER_BUDGET: list[str] = []


def pytest_runtest_logreport(report):
    """Collect the over-budget tests (in the controlling process too, under pytest-xdist)."""
    OVER_BUDGET.extend(text for key, text in getattr(report, "user_properties", ()) if key == "over_budget")


def pytest_terminal_summary(terminalreporter):
    if OVER_BUDGET:
        terminalreporter.section("over their time budget (tests/timing.py; a failure in CI)")
        for text in OVER_BUDGET:
            terminalreporter.write_line(text)
