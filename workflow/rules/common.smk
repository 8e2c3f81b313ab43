# Configuration checks and helpers shared by every rule file.
import json
import os
import re
import sys

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

# The checks below ask this checkout's hkd package (its method registry, its split rules).
sys.path.insert(0, workflow.basedir)

from hkd.devices import visible_gpus  # standard library only (torch is imported lazily)
from hkd.lock import OutLock  # standard library only
from hkd.workflow_deps import command_modules  # standard library only

try:
    from hkd import distill
    from hkd.data.cases import DataError
    from hkd.data.sources import count_cases
    from hkd.data.split import PARTS, check_split, format_ratios, part_sizes
    from hkd.data.tasks import check_task
    from hkd.train.trainer import check_study_runs
except ImportError as exc:  # Snakemake runs outside the hkd environment (--use-conda)
    distill = None
    logger.warning(
        f"hkd cannot be imported by Snakemake ({exc}): method names, distill options and split "
        "sizes are checked only when the jobs run; install hkd where Snakemake runs to check them now"
    )

SCHEMA = os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")


def _schema_error(cfg):
    """The first schema violation of ``cfg`` as one line: the key and the rule it breaks."""
    schema = yaml.safe_load(open(SCHEMA))
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(cfg)
    )
    if error is None:
        return None
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        key = ".".join([*map(str, error.absolute_path), extra[0]]) if extra else key
        broken = f"unknown key; known keys here: {sorted(error.schema.get('properties', {}))}"
    else:
        broken = f"{error.message} (schema rule '{error.validator}')"
    return f"config key {key}: {broken}"


try:
    validate(config, SCHEMA)
except WorkflowError as exc:
    message = _schema_error(config)
    if message is None:
        raise
    raise WorkflowError(message) from None


def _check_config(cfg):
    """Rules a JSON schema cannot express; each error names the key."""
    data = cfg["data"]
    ratios = data["split"]["ratios"]
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"config key data.split.ratios: {ratios} must sum to 1")
    lo, hi = data["hu_window"]
    if not hi > lo:
        raise ValueError(
            f"config key data.hu_window: upper bound {hi} must exceed lower bound {lo}"
        )
    n_classes = len(data["classes"])
    bad = {k: v for k, v in data["label_map"].items() if v >= n_classes}
    if bad:
        raise ValueError(
            f"config key data.label_map: class ids {sorted(set(bad.values()))} have no name in data.classes"
        )
    if data["source"] in ("zip", "folder", "transunet") and not data["path"]:
        raise ValueError(
            f"config key data.path: required for data.source '{data['source']}'"
        )
    user_path = data["source"] in ("zip", "folder", "transunet", "kits19", "lits")
    if user_path and data["path"] and not os.path.exists(data["path"]):
        raise ValueError(
            f"config key data.path: {data['path']} does not exist (data.source '{data['source']}')"
        )
    if data["source"] == "lits" and not data["path"]:
        raise ValueError(
            "config key data.path: required for data.source 'lits' (the LiTS folder or zip you downloaded: "
            "LiTS is distributed through CodaLab and Academic Torrents, which hkd cannot download)"
        )
    phantom = data["phantom"]
    if phantom["tumours"] is not None and phantom["layout"] == "synapse":
        raise ValueError(
            "config key data.phantom.tumours: the synapse layout has no tumour label; "
            "set data.phantom.layout to kits19 (kidney tumours) or lits (liver tumours)"
        )
    if data["split"]["preset"] == "file" and not data["split"]["file"]:
        raise ValueError(
            "config key data.split.file: required when data.split.preset is 'file'"
        )
    if distill is not None:
        try:
            check_task(data["task"], data["classes"])
        except DataError as exc:
            raise ValueError(f"config key {exc}") from None
        _check_methods(cfg)
        _check_split(cfg)
    augment = {**cfg["train"], **cfg["students"]["train"]}["augment"]
    if cfg["teacher"]["cache"] and cfg["students"]["lockstep"]:
        raise ValueError(
            "config keys students.lockstep and teacher.cache: a lock-step cohort runs the teacher once per "
            "batch for all its students; use one or the other"
        )
    if cfg["teacher"]["cache"] and augment != "none":
        raise ValueError(
            f"config key teacher.cache: a teacher cache holds the features of the un-augmented slices, so it is "
            f"exact only for students trained with augment 'none' (students train with '{augment}'); "
            "set teacher.cache: [] to run the teacher online on each augmented batch"
        )
    ranges = {k: phantom[k] for k in ("slices", "spacing_xy", "slice_thickness")}
    ranges |= {f"tumours.{k}": v for k, v in (phantom["tumours"] or {}).items()}
    for key, (lo, hi) in ranges.items():
        if lo > hi:
            raise ValueError(
                f"config key data.phantom.{key}: minimum {lo} exceeds maximum {hi}"
            )


def _check_methods(cfg):
    """Method names and options against the registry (hkd/distill), the one source of truth."""
    available = distill.available()
    for key, names in (
        ("students.methods", cfg["students"]["methods"]),
        ("teacher.cache", cfg["teacher"]["cache"]),
        ("distill", list(cfg["distill"])),
    ):
        unknown = sorted(set(names) - set(available))
        if unknown:
            raise ValueError(
                f"config key {key}: unknown method(s) {unknown}; available: {available}"
            )
    for name, options in cfg["distill"].items():
        known = distill.get(name).option_defaults()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(
                f"config key distill.{name}: unknown option(s) {unknown}; {name} takes {sorted(known)}"
            )


def _source_cases(data, out):
    """Number of cases the source will hold, where known before any job runs (else None)."""
    if data["source"] == "phantom":
        return data["phantom"]["cases"]
    if data["source"] == "synapse":
        return count_cases(f"{out}/raw/synapse/RawData.zip", "zip")
    if data["source"] == "kits19" and not data["path"]:
        return data["kits19"]["cases"]
    return count_cases(data["path"], data["source"])


def _check_split(cfg):
    """Split settings that would leave a part empty, found before the expensive work."""
    split = cfg["data"]["split"]
    if split["preset"] == "file":
        path = split["file"]
        if not os.path.isfile(path):
            raise ValueError(f"config key data.split.file: {path} does not exist")
        try:
            parts = json.loads(open(path).read())
            check_split({part: list(parts[part]) for part in PARTS})
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"config key data.split.file: {path}: not a split file with non-empty "
                f"'train', 'val' and 'test' lists ({exc})"
            ) from None
    if split["preset"] != "random":
        return
    zero = [part for part, r in zip(PARTS, split["ratios"]) if r == 0]
    if zero:
        raise ValueError(
            f"config key data.split.ratios: {format_ratios(split['ratios'])} leave the "
            f"'{zero[0]}' part empty"
        )
    try:
        n = _source_cases(cfg["data"], cfg["out"])
    except DataError as exc:
        raise ValueError(f"config key data.path: {exc}") from None
    try:
        if n is not None:
            part_sizes(n, split["ratios"])
    except DataError as exc:
        raise ValueError(f"config key {exc}") from None


_check_config(config)

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


def code(command):
    """The hkd source files `hkd <command>` executes (derived from its imports), declared as inputs
    so that editing one reruns exactly the rules whose command imports it."""
    return [
        os.path.join(workflow.basedir, path)
        for path in command_modules(command, workflow.basedir)
    ]


def as_json(obj):
    """Compact JSON for passing structured params to the hkd CLI."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# --- data -------------------------------------------------------------------------------------
def source_format():
    """The reader of the source cases (hkd split/prepare --format)."""
    if DATA["source"] == "phantom":
        layout = DATA["phantom"]["layout"]
        return "rawdata" if layout == "synapse" else layout
    if DATA["source"] in ("transunet", "kits19", "lits"):
        return DATA["source"]
    return "rawdata"


SOURCE_FORMAT = source_format()
# kits19 and lits read a folder, or a zip that the extract rule unpacks; kits19 without a path is downloaded.
ARCHIVE = DATA["source"] in ("kits19", "lits") and os.path.isfile(str(DATA["path"]))
KITS19_DOWNLOAD = f"{OUT}/raw/kits19/data"


def download_arguments():
    """What `hkd download` fetches: the Synapse archive, or the KiTS19 cases (imaging and labels)."""
    if DATA["source"] == "kits19":
        kits = DATA["kits19"]
        return (
            f"--source kits19 --cases {kits['cases']} --imaging-url '{kits['imaging_url']}'"
            f" --labels-url '{kits['labels_url']}'"
        )
    md5 = f" --md5 {DATA['md5']}" if DATA["md5"] else ""
    return f"--entity {DATA['synapse_entity']}{md5}"


def raw_source():
    """The folder that holds the source cases for the configured data.source."""
    if DATA["source"] == "phantom":
        return f"{OUT}/raw/phantom"
    if DATA["source"] in ("synapse", "zip") or ARCHIVE:
        return f"{OUT}/raw/{DATA['source']}/RawData"
    if DATA["source"] == "kits19" and not DATA["path"]:
        return KITS19_DOWNLOAD
    return DATA["path"]


def source_files():
    """The files of a user's source folder (folder, transunet, kits19, lits), as inputs: a folder's own
    mtime misses a label fixed in place, and a new or removed file changes the set of inputs, which
    reruns too.
    """
    if DATA["source"] not in ("folder", "transunet", "kits19", "lits"):
        return []
    if not DATA["path"] or not os.path.isdir(DATA["path"]):
        return []
    found = []
    for folder, dirs, files in os.walk(DATA["path"]):
        # hidden folders hold no cases (e.g. a KiTS19 clone's .git)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(os.path.join(folder, f) for f in files if not f.startswith("."))
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


def train_config(section, model, seed, method="scratch"):
    """The JSON training config of one run: shared recipe, section overrides, model, method, seed."""
    recipe = {**config["train"], **config[section]["train"]}
    recipe.pop("threads")
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


def cohort_names():
    """Lock-step cohort member name -> (method, width), for every student of a seed."""
    return {
        f"{method}_w{width}": (method, width)
        for method in config["students"]["methods"]
        for width in config["students"]["widths"]
    }


def cohort_members(seed):
    """The students of one seed as lock-step cohort members: name -> training config."""
    return {
        name: train_config("students", student_model(width), seed, method)
        for name, (method, width) in cohort_names().items()
    }


# Wildcard constraint of the distilled students' rules (scratch students have their own).
DISTILLED_METHODS = (
    "|".join(re.escape(m) for m in config["students"]["methods"] if m != "scratch")
    or "(?!)"
)


def student_model(width):
    return {
        "arch": config["students"]["arch"],
        "width": width,
        "init": config["students"]["init"],
    }


def run_outputs(folder):
    return {name.replace(".", "_"): f"{folder}/{name}" for name in RUN_FILES}


# Every run's recipe, model specs and method options, checked by the code that trains (hkd/train/trainer.py).
if distill is not None and not workflow.remote_exec:
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
                f"students.widths ('{w}')",
                train_config("students", student_model(w), 0, m),
            )
            for m in config["students"]["methods"]
            for w in config["students"]["widths"]
        ],
        DATA["image_size"],
        len(DATA["classes"]),
    )


STUDENT_RUNS = expand(
    f"{STUDENT_DIR}/metrics.json",
    method=config["students"]["methods"],
    width=config["students"]["widths"],
    seed=config["students"]["seeds"],
)


# --- evaluation, figures, report ----------------------------------------------------------------
EVAL_FILES = [f"{OUT}/eval/teacher.csv"] + expand(
    f"{OUT}/eval/students/{{method}}_w{{width}}_s{{seed}}.csv",
    method=config["students"]["methods"],
    width=config["students"]["widths"],
    seed=config["students"]["seeds"],
)
FIGURE_SEED = config["students"]["seeds"][0]
FIGURE_MODELS = {"teacher": TEACHER_DIR} | {
    f"{m}_w{w}_s{FIGURE_SEED}": STUDENT_DIR.format(method=m, width=w, seed=FIGURE_SEED)
    for m in config["students"]["methods"]
    for w in config["students"]["widths"]
}
# Training logs of every run (all seeds): training curves and gradient ratios.
FIGURE_LOGS = {"teacher": f"{TEACHER_DIR}/log.csv"} | {
    f"{m}_w{w}_s{s}": f"{STUDENT_DIR.format(method=m, width=w, seed=s)}/log.csv"
    for m in config["students"]["methods"]
    for w in config["students"]["widths"]
    for s in config["students"]["seeds"]
}


def study_description():
    """What the configuration runs, in words, for the report's first page."""
    phantom = DATA["phantom"]
    if DATA["source"] == "phantom":
        source = f"phantom: {phantom['cases']} generated abdominal CT cases (seed {phantom['seed']})"
        if phantom["layout"] != "synapse":
            tumours = "with tumours" if phantom["tumours"] is not None else "no tumours"
            source += f", {phantom['layout']} layout, {tumours}"
    elif DATA["source"] == "kits19" and not DATA["path"]:
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
        "students": f"{config['students']['arch']}, widths {', '.join(config['students']['widths'])}",
        "methods": ", ".join(config["students"]["methods"]),
        "seeds": ", ".join(str(s) for s in config["students"]["seeds"]),
        "epochs": f"teacher {config['teacher']['train'].get('epochs', config['train']['epochs'])}, "
        f"students {config['students']['train'].get('epochs', config['train']['epochs'])}",
        "device": config["device"],
    }


CONTEXT_RUNS = [
    {
        "model": f"{m}_w{w}_s{s}",
        "method": m,
        "width": w,
        "seed": s,
        "checkpoint": os.path.join(
            STUDENT_DIR.format(method=m, width=w, seed=s), "best.pt"
        ),
    }
    for m in config["students"]["methods"]
    for w in config["students"]["widths"]
    for s in config["students"]["seeds"]
]
FIGURES = [
    "overlays",
    "saliency",
    "gradcam",
    "latent_pca",
    "training_curves",
    "grad_ratios",
    "dice_vs_params",
]
