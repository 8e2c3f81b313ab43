# Configuration checks and helpers shared by every rule file.
import json
import os
import re
import sys

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

# This checkout's hkd package: its config checks, study model and import walker (standard library only).
sys.path.insert(0, workflow.basedir)

from hkd.config_checks import (
    check_against_package,
    check_config,
    check_whole_numbers,
    merge_config,
    schema_error,
)
from hkd.lock import OutLock
from hkd.chains import direct_method
from hkd.data import sources
from hkd.study import Study
from hkd.study.scheduling import gpu_request, teacher_argument
from hkd.trust import allow_modules, spec_modules
from hkd.workflow_deps import command_modules

SCHEMA = os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")

# A model spec from --configfile or --config replaces the earlier one whole (hkd/config_checks.py WHOLE),
# whichever file it comes from (CONFIG_OVERRIDES: configfiles.smk).
merge_config(config, CONFIG_OVERRIDES)

try:
    validate(config, SCHEMA)
except WorkflowError as exc:
    message = schema_error(config, SCHEMA)
    if message is None:
        raise
    raise WorkflowError(message) from None
# A config error is one line naming the key (a WorkflowError: Snakemake adds no traceback).
try:
    check_whole_numbers(config, SCHEMA)
    check_config(config)
except ValueError as exc:
    raise WorkflowError(str(exc)) from None
HKD_IMPORTABLE = True  # whether hkd's requirements are installed where Snakemake runs
try:
    check_against_package(config)
except ValueError as exc:
    raise WorkflowError(str(exc)) from None
except ImportError as exc:  # Snakemake runs outside the hkd environment (--use-conda)
    HKD_IMPORTABLE = False
    if config["students"]["methods"] == "all":
        raise WorkflowError(
            f"config key students.methods: 'all' is read from hkd's method registry, which Snakemake cannot "
            f"import here ({exc}); list the methods, or install hkd where Snakemake runs"
        ) from None
    logger.warning(
        f"hkd cannot be imported by Snakemake ({exc}): method names, distill options and split "
        "sizes are checked only when the jobs run; install hkd where Snakemake runs to check them now"
    )

OUT = config["out"]
# Every output's path (hkd/study/layout.py): the rules take theirs from it.
STUDY = Study(config)
LAYOUT = STUDY.layout
# One run per output folder, from any working directory; taken when jobs start (never for a dry run).
OUT_LOCK = OutLock(OUT)


onstart:
    OUT_LOCK.acquire()


onsuccess:
    OUT_LOCK.release()


onerror:
    OUT_LOCK.release()


DATA = config["data"]
ENV = os.path.join(workflow.basedir, "envs", "hkd.yaml")
# The conda env installs hkd from ${HKD_SOURCE}: its copy under .snakemake/conda/ cannot use a relative path.
os.environ.update(HKD_SOURCE=workflow.basedir)
# The modules the config's `arch: module` specs name: the only ones a job may import for a checkpoint's
# network (hkd/trust.py; a file never makes hkd import code).
allow_modules(spec_modules(config))
# The data source, the runs and every list of runs the rules read, and each run's training config
# (hkd/study/).
SOURCE, RUNS, RECIPES = STUDY.data, STUDY.runs, STUDY.recipes
try:
    RUNS.scans  # deploy.scans: a folder of scans, listed once (one job per scan)
except ValueError as exc:
    raise WorkflowError(str(exc)) from None


def code(command, loads=()):
    """The hkd source files a job of `hkd <command>` executes when the registries load the modules
    `loads` (its method, its reader), derived from the imports (hkd/workflow_deps.py) and declared as
    inputs, so that editing one reruns exactly the jobs that run it. Relative paths: a moved or
    re-cloned project with the same files is the same study."""
    return [
        os.path.relpath(os.path.join(workflow.basedir, path))
        for path in command_modules(command, workflow.basedir, loads)
    ]


def method_code(command, methods):
    """The code of a job that runs the distillation `methods` (hkd.distill.<method>: one file each; a
    chain's label, METHOD@ASSISTANT, runs METHOD)."""
    return code(command, [f"hkd.distill.{direct_method(m)}" for m in methods])


def as_json(obj):
    """Compact JSON for passing structured params to the hkd CLI."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# --- training ---------------------------------------------------------------------------------
# Training jobs ask for a GPU under a cluster executor (which needs --jobs; a cluster job also parses the
# workflow, as a remote job), or where a CUDA device is visible (hkd/study/scheduling.py gpu_request).
GPU = gpu_request(
    config["device"],
    on_cluster=workflow.remote_exec or workflow.resource_settings.nodes is not None,
)
logger.info(
    f"hkd: training jobs {'ask for' if GPU.asks else 'do not ask for'} a GPU: {GPU.why}"
)

# Live curves (train.tracker): a resource, not a param, so changing it retrains nothing (it changes no
# number of a run); the MLflow store is the study's.
TRACKING = {"tracker": config["train"]["tracker"]}
TRACKING_ARGS = f"--tracker {{resources.tracker}} --tracking-store {LAYOUT.mlruns}"

# Every run's recipe, model specs and method options, checked by the code that trains (hkd/train/preflight.py).
if HKD_IMPORTABLE and not workflow.remote_exec:
    from hkd.train.preflight import check_study_runs

    try:
        check_study_runs(
            RECIPES.preflight_runs(), DATA["image_size"], len(DATA["classes"])
        )
    except ValueError as exc:
        raise WorkflowError(str(exc)) from None
    if "conda" not in str(workflow.deployment_settings.deployment_method).lower():
        # the jobs run here: say now, in one line, that a tracker's package is missing (a warning: the report
        # and the steps after training do not need it)
        from hkd.train.tracking import check_installed

        try:
            check_installed(config["train"]["tracker"])
        except ImportError as exc:
            logger.warning(f"{exc}; every training job would stop on it")


def external_evals(wildcards, input):
    """The external cohort's evaluations (data.external; external.smk) as an option of the tables and verdicts."""
    return f" --external-evals {' '.join(input.external)}" if input.external else ""
