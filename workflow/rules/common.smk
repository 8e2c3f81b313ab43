# Configuration checks and helpers shared by every rule file.
import json
import os
import re
import sys

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

# This checkout's hkd package: its config checks, source registry and import walker (standard library only).
sys.path.insert(0, workflow.basedir)

from hkd.config_checks import (
    check_against_package,
    check_config,
    check_whole_numbers,
    merge_config,
    schema_error,
)
from hkd.data import sources
from hkd.devices import visible_gpus  # torch is imported lazily
from hkd.figures import FIGURES
from hkd.lock import OutLock
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
    """The code of a job that runs the distillation `methods` (hkd.distill.<method>: one file each)."""
    return code(command, [f"hkd.distill.{method}" for method in methods])


def as_json(obj):
    """Compact JSON for passing structured params to the hkd CLI."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# --- data: what data.source is (hkd/data/sources.py) -------------------------------------------
SOURCE = sources.source_of(DATA)
SOURCE_FORMAT = sources.case_format(DATA)  # hkd split/prepare --format
READER = sources.FORMATS[SOURCE_FORMAT]  # the module that reads the case files
PACKED = sources.packed(DATA)  # zip: extracted by the extract rule first
DOWNLOADS = sources.downloads(DATA)
# What `hkd download` writes: the Synapse archive, or the KiTS19 cases' folder.
DOWNLOADED = f"{OUT}/raw/{SOURCE.name}/" + (
    "RawData.zip" if PACKED == "zip" else "data"
)
# The zip the extract rule unpacks, downloaded or the user's.
ARCHIVE = DOWNLOADED if DOWNLOADS else DATA["path"]
EXTRACTED = "|".join(
    s.name for s in sources.SOURCES.values() if s.packed in ("zip", "either")
)


def download_arguments():
    """What `hkd download` fetches: the Synapse archive, or the KiTS19 cases (imaging and labels)."""
    if SOURCE.name == "kits19":
        kits = DATA["kits19"]
        return (
            f"--source kits19 --cases {kits['cases']} --imaging-url '{kits['imaging_url']}'"
            f" --labels-url '{kits['labels_url']}'"
        )
    md5 = f" --md5 {DATA['md5']}" if DATA["md5"] else ""
    return f"--entity {DATA['synapse_entity']}{md5}"


def raw_source():
    """The folder that holds the source cases."""
    if SOURCE.name == "phantom":
        return f"{OUT}/raw/phantom"
    if PACKED == "zip":
        return f"{OUT}/raw/{SOURCE.name}/RawData"
    return DOWNLOADED if DOWNLOADS else DATA["path"]


def source_files():
    """The files of a user's source folder, as inputs: a folder's own mtime misses a label fixed in
    place, and a new or removed file changes the set of inputs, which reruns too."""
    folder = sources.user_folder(DATA)
    if folder is None or not os.path.isdir(folder):
        return []
    found = []
    for parent, dirs, files in os.walk(folder):
        # hidden folders hold no cases (e.g. a KiTS19 clone's .git)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(os.path.join(parent, f) for f in files if not f.startswith("."))
    return sorted(found)


def split_file():
    """The split file of preset 'file', an input of the split rule (editing it reruns the split)."""
    return DATA["split"]["file"] if DATA["split"]["preset"] == "file" else []


# --- training ---------------------------------------------------------------------------------
# Under a cluster executor (which needs --jobs; a cluster job also parses the workflow, as a remote job).
ON_CLUSTER = workflow.remote_exec or workflow.resource_settings.nodes is not None


def gpu_request(device):
    """Whether training jobs declare `resources: gpu=1`, and why, decided when the workflow is parsed.

    An explicit device decides by itself. With `auto` a job may land elsewhere: under a cluster
    executor (which needs --jobs; a cluster job also parses the workflow, as a remote job) the job
    asks, so the scheduler gives it a GPU; on this machine it asks only when a CUDA device is visible.
    """
    if device.startswith("cuda"):
        return True, f"device: {device}"
    if device != "auto":
        return False, f"device: {device}"
    if ON_CLUSTER:
        return (
            True,
            "device: auto under a cluster executor (--jobs given): the job may run on a GPU node",
        )
    gpus = visible_gpus()
    if gpus:
        return True, f"device: auto and CUDA device(s) {','.join(gpus)} visible here"
    return (
        False,
        "device: auto and no CUDA device visible here (CUDA_VISIBLE_DEVICES, nvidia-smi)",
    )


USES_GPU, _why = gpu_request(config["device"])


def gpu_resources(bundled=False):
    """The GPU request of a training job, spread into its resources; none for a job without a GPU.

    `gpu=1`; for rules that the SLURM profile bundles into group jobs (`bundled`), under a cluster
    executor, `gres="gpu:1"` instead: Snakemake adds up a number like `gpu` over a group's jobs that
    run side by side (four bundled students would ask for four GPUs), but passes an equal string
    through once, so a bundle asks SLURM for one GPU and its students share it. A job submitted on
    its own gets one GPU either way; on one machine `gpu=1` is what `--resources gpu=N` counts.
    """
    if not USES_GPU:
        return {}
    return {"gres": "gpu:1"} if bundled and ON_CLUSTER else {"gpu": 1}


logger.info(
    f"hkd: training jobs {'ask for' if USES_GPU else 'do not ask for'} a GPU: {_why}"
)
TEACHER_DIR = f"{OUT}/models/teacher"
STUDENT_DIR = f"{OUT}/models/students/{{method}}/w{{width}}/s{{seed}}"
RUN_FILES = ("best.pt", "last.pt", "log.csv", "metrics.json")
METHODS = config["students"]["methods"]
# The students by label: SqueezeUNet at each of `students.widths` (the label is the width), then the
# networks of `students.models` (any arch, by the label given there). Run names and folders use the label.
STUDENTS = {
    str(w): {
        "arch": config["students"]["arch"],
        "width": w,
        "init": config["students"]["init"],
    }
    for w in config["students"]["widths"]
} | dict(config["students"]["models"])
# Wildcard constraint of a student label.
STUDENT_LABEL = "|".join(re.escape(label) for label in STUDENTS)
# The study's students, one row per method x width x seed: every list of runs below is read from it.
RUNS = [
    {
        "name": f"{method}_w{width}_s{seed}",
        "model": f"{method}_w{width}",
        "method": method,
        "width": width,
        "seed": seed,
        "dir": STUDENT_DIR.format(method=method, width=width, seed=seed),
    }
    for method in METHODS
    for width in STUDENTS
    for seed in config["students"]["seeds"]
]


def train_config(section, model, seed, method="scratch"):
    """The JSON training config of one run: shared recipe, section overrides, model, method, seed."""
    recipe = {**config["train"], **config[section]["train"]}
    recipe.pop("threads")
    # train.tracker reaches the job as a resource (see TRACKING): no part of the run's identity
    recipe.pop("tracker")
    return {
        **recipe,
        "model": model,
        "seed": int(seed),
        "device": config["device"],
        "method": method,
        "method_options": config["distill"].get(method, {}),
        "teacher": config["teacher"]["model"] if method != "scratch" else None,
    }


def teacher_input(w):
    """What a student run needs of the teacher: nothing, its feature cache, or its checkpoint."""
    if w.method == "scratch":
        return []
    if w.method in config["teacher"]["cache"]:
        return f"{OUT}/models/teacher/cache/{w.method}.h5"
    return f"{TEACHER_DIR}/best.pt"


def teacher_argument(w, input):
    if not input.teacher:
        return ""
    flag = "--teacher-cache" if input.teacher.endswith(".h5") else "--teacher"
    return f"{flag} {input.teacher}"


def cohort_runs(seed):
    """The students of one seed, a lock-step cohort: member name (METHOD_wWIDTH) -> run."""
    return {run["model"]: run for run in RUNS if str(run["seed"]) == str(seed)}


def cohort_members(seed):
    """The students of one seed as lock-step cohort members: name -> training config."""
    return {
        name: train_config("students", student_model(run["width"]), seed, run["method"])
        for name, run in cohort_runs(seed).items()
    }


# Wildcard constraint of the distilled students' rules (scratch students have their own).
DISTILLED_METHODS = "|".join(re.escape(m) for m in METHODS if m != "scratch") or "(?!)"


def student_model(label):
    """The model spec of the student labelled `label` (a width, or a key of `students.models`)."""
    return STUDENTS[str(label)]


# Live curves (train.tracker): a resource, not a param, so changing it retrains nothing (it changes no
# number of a run); the MLflow store is the study's.
TRACKING = {"tracker": config["train"]["tracker"]}
TRACKING_ARGS = f"--tracker {{resources.tracker}} --tracking-store {OUT}/mlruns"


def run_outputs(folder):
    return {name.replace(".", "_"): f"{folder}/{name}" for name in RUN_FILES}


# Every run's recipe, model specs and method options, checked by the code that trains (hkd/train/trainer.py).
if HKD_IMPORTABLE and not workflow.remote_exec:
    from hkd.train.preflight import check_study_runs

    try:
        check_study_runs(
            [
                (
                    "teacher",
                    "teacher.model",
                    train_config("teacher", config["teacher"]["model"], 0),
                )
            ]
            + [
                (
                    "students",
                    (
                        f"students.models.{w}"
                        if w in config["students"]["models"]
                        else f"students.widths ('{w}')"
                    ),
                    train_config("students", student_model(w), 0, m),
                )
                for m in METHODS
                for w in STUDENTS
            ],
            DATA["image_size"],
            len(DATA["classes"]),
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


STUDENT_RUNS = [f"{run['dir']}/metrics.json" for run in RUNS]


# --- evaluation, figures, report ----------------------------------------------------------------
EVAL_FILES = [f"{OUT}/eval/teacher.csv"] + [
    f"{OUT}/eval/students/{run['name']}.csv" for run in RUNS
]
FIGURE_SEED = config["students"]["seeds"][0]
# Every run for the figures: the training curves and gradient ratios show all seeds, the qualitative
# figures the checkpoints of the teacher and of the students of the first seed.
FIGURE_RUNS = [
    {
        "name": "teacher",
        "model": "teacher",
        "method": "teacher",
        "width": None,
        "seed": None,
        "checkpoint": f"{TEACHER_DIR}/best.pt",
        "log": f"{TEACHER_DIR}/log.csv",
    }
] + [
    {key: run[key] for key in ("name", "model", "method", "width", "seed")}
    | {"log": f"{run['dir']}/log.csv"}
    | ({"checkpoint": f"{run['dir']}/best.pt"} if run["seed"] == FIGURE_SEED else {})
    for run in RUNS
]


def study_description():
    """What the configuration runs, in words, for the report's first page."""
    phantom = DATA["phantom"]
    if SOURCE.name == "phantom":
        source = f"phantom: {phantom['cases']} generated abdominal CT cases (seed {phantom['seed']})"
        if phantom["layout"] != "synapse":
            tumours = "with tumours" if phantom["tumours"] is not None else "no tumours"
            source += f", {phantom['layout']} layout, {tumours}"
    elif DOWNLOADS and SOURCE.name == "kits19":
        source = f"kits19: downloaded, cases 0-{DATA['kits19']['cases'] - 1}"
    else:
        source = f"{DATA['source']}: {DATA['path'] or DATA['synapse_entity']}"
    teacher = config["teacher"]["model"]
    return {
        "data source": source,
        "slices": f"{DATA['image_size']} x {DATA['image_size']} px, HU window {DATA['hu_window']} "
        f"scaled to {DATA['scale']}",
        "task": f"{DATA['task']}: {', '.join(DATA['classes'][1:])}",
        "split": f"{DATA['split']['preset']} (seed {DATA['split']['seed']})",
        "teacher": ", ".join(f"{k} {v}" for k, v in teacher.items()),
        "students": "; ".join(
            (
                [
                    f"{config['students']['arch']}, widths {', '.join(config['students']['widths'])}"
                ]
                if config["students"]["widths"]
                else []
            )
            + [
                f"{label}: " + ", ".join(f"{k} {v}" for k, v in spec.items())
                for label, spec in config["students"]["models"].items()
            ]
        ),
        "methods": ", ".join(config["students"]["methods"]),
        "seeds": ", ".join(str(s) for s in config["students"]["seeds"]),
        "epochs": f"teacher {config['teacher']['train'].get('epochs', config['train']['epochs'])}, "
        f"students {config['students']['train'].get('epochs', config['train']['epochs'])}",
        "device": config["device"],
    }


CONTEXT_RUNS = [
    {key: run[key] for key in ("method", "width", "seed")}
    | {"model": run["name"], "checkpoint": f"{run['dir']}/best.pt"}
    for run in RUNS
]
