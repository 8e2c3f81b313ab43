"""What several test files share: tiny model specs, tiny study configs and running the workflow.

Fixtures built from these live in ``conftest.py``; import plain values and functions from here.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from hkd.config_checks import merge_config

REPO = Path(__file__).resolve().parents[1]
REAL_CT = REPO.parent / "shared" / "data" / "real-ct"

# BTCV ids -> TransUNet's 8 organs, as in config.yaml
LABEL_MAP = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 0, 6: 5, 7: 6, 8: 7, 9: 0, 10: 0, 11: 8, 12: 0, 13: 0}
CLASSES = ["background", "spleen", "right_kidney", "left_kidney", "gallbladder", "liver", "stomach", "aorta",
           "pancreas"]

# The smallest TransUNet of the published layout, and the smallest SqueezeUNet: seconds per epoch on a CPU.
TINY_TEACHER = {"arch": "transunet", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64,
                "block_units": [1, 1, 1], "resnet_width": 8, "decoder_channels": [32, 16, 8, 8]}
TINY_STUDENT = {"arch": "squeezeunet", "width": 0.25}

# Per-test torch threads (the CI machine has 2 cores, one per pytest-xdist worker); HKD_TEST_THREADS overrides.
THREADS = int(os.environ.get("HKD_TEST_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"))


def merge(base: dict, update: dict) -> dict:
    """``base`` updated in place with ``update``, nested dicts merged key by key; returns ``base``."""
    return merge_config(base, update)


def default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


# The default study, reduced to run in about two minutes on 2 cores: every rule, the default's methods
# (scratch, logits, latent) and hlfd, the logits students from the teacher cache (which needs
# students trained without augmentation), one width, one seed, a tiny teacher and 6 small phantom
# cases: 18 jobs. The full default (50 cases, 18 students, 47 jobs) takes well over 15 minutes there.
STUDY = {
    "data": {"phantom": {"cases": 6, "size": 64, "slices": [10, 14]}, "image_size": 32, "external": {"cases": 3}},
    "train": {"epochs": 2, "batch_size": 8, "threads": 1},
    "teacher": {"model": TINY_TEACHER, "cache": ["logits"], "train": {"epochs": 3}},
    "students": {"widths": ["0.25"], "seeds": [0], "methods": ["scratch", "logits", "latent", "hlfd"],
                 "train": {"augment": "none"}},
    "report": {"n_slices": 1, "context_slices": 4},
}
# Still one job of each rule kind, fewer of them (the SLURM test: 14 jobs).
SMALL_STUDY = merge(copy.deepcopy(STUDY), {"students": {"methods": ["scratch", "logits"]}})


# Headless Chromium for the report tests (CI installs Debian's chromium and sets HKD_CHROMIUM); the flags
# keep it from reaching the network.
CHROMIUM = os.environ.get("HKD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
PLAIN = REPO / "tests" / "plain_install.py"


@contextlib.contextmanager
def chromium_page(width: int, errors: list):
    """A page of headless Chromium (Playwright) ``width`` px wide; the page's script errors go to ``errors``."""
    import pytest

    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            yield page
        finally:
            browser.close()


def snakemake_as_plain_install(root: Path, *args: str, pyproject: Path = REPO / "pyproject.toml"):
    """`snakemake ARGS` on the workflow copy in ``root`` where only the project's own dependencies (no test
    extras) can be imported."""
    CALLS.append("run")  # a workflow process: the test's kind (tests/timing.py)
    return subprocess.run([sys.executable, str(PLAIN), str(pyproject), "-m", "snakemake", "--directory", str(root),
                           "--snakefile", str(root / "Snakefile"), *args],
                          cwd=root, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})


def study_config(overrides: dict, out: str, configfile: Path | None = None) -> dict:
    """The default config, updated by ``configfile`` (as ``snakemake --configfile`` merges it), then by
    ``overrides``, writing to ``out``."""
    base = default_config()
    if configfile is not None:
        merge(base, yaml.safe_load(configfile.read_text()))
    return merge(merge(base, overrides), {"out": out})


# A tiny version of workflow/configs/hlfd-{kits19,lits}.yaml on the tumour phantom in that dataset's layout,
# read through the same KiTS19 or LiTS reader: every method of the config, one width, one seed.
def tumour_study(dataset: str) -> dict:
    return {
        "data": {"source": "phantom", "path": None,
                 "phantom": {"cases": 6, "size": 64, "slices": [10, 12], "layout": dataset,
                             "tumours": {"count": [1, 2], "radius_mm": [30, 50], "contrast_hu": [60, 100]}},
                 "image_size": 32},
        "train": {"epochs": 1, "batch_size": 8, "threads": 1},
        "teacher": {"model": TINY_TEACHER, "train": {"epochs": 2}},
        "students": {"widths": ["0.25"], "seeds": [0]},
        "report": {"n_slices": 1, "context_slices": 4},
    }


def runnable(configfile: Path, tmp_path: Path, root: Path = REPO) -> Path:
    """``configfile``, or where its ``data.path`` (a dataset the user downloads) does not exist under ``root``,
    a copy pointing at a small generated dataset in that source's layout (KiTS19 or LiTS), read by the same
    reader: for dry runs of every study config."""
    from hkd.data.phantom import LAYOUT_LABELS, write_phantom_dataset

    cfg = yaml.safe_load(configfile.read_text())
    data = cfg.get("data", {})
    if not data.get("path") or (root / data["path"]).exists():
        return configfile
    assert data["source"] in LAYOUT_LABELS, f"{configfile}: data.path {data['path']} missing"
    write_phantom_dataset(tmp_path / "source", n_cases=5, seed=0, size=32, slices=(4, 5), layout=data["source"],
                          tumours={})
    path = tmp_path / configfile.name
    path.write_text(yaml.safe_dump(merge(cfg, {"data": {"path": str(tmp_path / "source")}})))
    return path


def copy_tracked_files(dest: Path) -> Path:
    """A copy of the repository's tracked files (or, outside git, of what the workflow needs) in ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout:
        names = [n for n in listed.stdout.split("\0") if n and (REPO / n).is_file()]
    else:
        names = [str(p.relative_to(REPO)) for top in ("Snakefile", "config.yaml", "workflow", "hkd", "envs",
                                                       "pyproject.toml")
                 for p in ([REPO / top] if (REPO / top).is_file() else (REPO / top).rglob("*"))
                 if p.is_file() and "__pycache__" not in p.parts]
    for name in names:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)
    return dest


# Snakemake flags that only plan (nothing runs): such calls run in this interpreter.
PLANNING = {"-n", "--dry-run", "--dryrun", "--rulegraph", "--dag", "--d3dag", "--filegraph", "--lint"}
# What the current test asked of Snakemake ("plan", "run"): tests/timing.py reads it to say what kind it is.
CALLS: list[str] = []


def snakemake(root: Path, *args: str, directory: Path | None = None, env: dict | None = None,
              timeout: float | None = None, process: bool = False) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` on the workflow in ``root`` (its Snakefile, its ``hkd`` package for the jobs),
    working in ``directory`` (default ``root``).

    A call that only plans (a flag of ``PLANNING``) runs in this interpreter through Snakemake's own
    command-line entry point, so Snakemake's start-up and the imports of the workflow's checks (torch) are
    paid once per test run, not once per dry run; the workflow's checks then use this interpreter's
    ``hkd``, which is ``root``'s for the checkouts and copies the tests use. Calls that run jobs, and
    ``process=True``, start ``python -m snakemake`` (the command line itself, tested as users run it)."""
    argv = ["--directory", str(directory or root), "--snakefile", str(root / "Snakefile"), *args]
    CALLS.append("plan" if PLANNING & set(args) else "run")
    if not process and PLANNING & set(args):
        return _in_process(argv, env or {})
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-m", "snakemake", *argv], cwd=root, capture_output=True, text=True,
                          env=env, timeout=timeout)


def _in_process(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    """Snakemake's command line run here, its output captured, the process state (working folder,
    ``sys.path``, environment) restored after, as a finished process would leave it."""
    import snakemake.cli

    out, err = io.StringIO(), io.StringIO()
    cwd, path, environ = os.getcwd(), list(sys.path), dict(os.environ)
    os.environ.update(env)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                snakemake.cli.main(argv)
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    finally:
        os.chdir(cwd)
        sys.path[:] = path
        os.environ.clear()
        os.environ.update(environ)
    return subprocess.CompletedProcess(["snakemake", *argv], code, out.getvalue(), err.getvalue())
