# Configuration checks and helpers shared by every rule file.
import json
import os

from snakemake.logging import logger
from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")


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
    if data["split"]["preset"] == "file" and not data["split"]["file"]:
        raise ValueError(
            "config key data.split.file: required when data.split.preset is 'file'"
        )
    known = {
        f[:-3]
        for f in os.listdir(os.path.join(workflow.basedir, "hkd", "distill"))
        if f.endswith(".py") and f not in ("__init__.py", "base.py", "functional.py")
    }
    unknown = sorted(set(cfg["students"]["methods"]) - known)
    if unknown:
        raise ValueError(
            f"config key students.methods: unknown method(s) {unknown}; available: {sorted(known)}"
        )
    augment = {**cfg["train"], **cfg["students"]["train"]}["augment"]
    if cfg["teacher"]["cache"] and augment != "none":
        raise ValueError(
            f"config key teacher.cache: a teacher cache holds the features of the un-augmented slices, so it is "
            f"exact only for students trained with augment 'none' (students train with '{augment}'); "
            "set teacher.cache: [] to run the teacher online on each augmented batch"
        )
    for key in ("slices", "spacing_xy", "slice_thickness"):
        lo, hi = data["phantom"][key]
        if lo > hi:
            raise ValueError(
                f"config key data.phantom.{key}: minimum {lo} exceeds maximum {hi}"
            )


_check_config(config)

OUT = config["out"]
DATA = config["data"]
ENV = os.path.join(workflow.basedir, "envs", "hkd.yaml")
# The conda env installs hkd from ${HKD_SOURCE}: its copy under .snakemake/conda/ cannot use a relative path.
os.environ.update(HKD_SOURCE=workflow.basedir)


def code(*modules):
    """Source files of the hkd package a rule runs, declared as inputs so edits rerun the rule."""
    return [os.path.join(workflow.basedir, "hkd", m) for m in modules]


def package_files(*subpackages):
    """Every module of the given hkd subpackages, as inputs (a folder's mtime misses edits)."""
    return sorted(
        os.path.join(workflow.basedir, "hkd", sub, f)
        for sub in subpackages
        for f in os.listdir(os.path.join(workflow.basedir, "hkd", sub))
        if f.endswith(".py")
    )


def as_json(obj):
    """Compact JSON for passing structured params to the hkd CLI."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# --- data -------------------------------------------------------------------------------------
SOURCE_FORMAT = "transunet" if DATA["source"] == "transunet" else "rawdata"


def raw_source():
    """The folder that holds the source cases for the configured data.source."""
    if DATA["source"] == "phantom":
        return f"{OUT}/raw/phantom"
    if DATA["source"] in ("synapse", "zip"):
        return f"{OUT}/raw/{DATA['source']}/RawData"
    return DATA["path"]


# --- training ---------------------------------------------------------------------------------
TRAIN_CODE = code(
    "train/trainer.py",
    "train/losses.py",
    "train/augment.py",
    "data/dataset.py",
    "devices.py",
    "io.py",
    "models/__init__.py",
    "models/base.py",
    "distill/__init__.py",
    "distill/base.py",
)


def _visible_gpus():
    """GPU ids visible here (CUDA_VISIBLE_DEVICES or nvidia-smi), from the checkout's hkd/devices.py:
    it needs no torch and no installed hkd (the workflow may run outside the rules' conda env).
    """
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location(
        "hkd_devices", os.path.join(workflow.basedir, "hkd", "devices.py")
    )
    devices = module_from_spec(spec)
    spec.loader.exec_module(devices)
    return devices.visible_gpus()


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
    if workflow.remote_exec or workflow.resource_settings.nodes is not None:
        return (
            True,
            "device: auto under a cluster executor (--jobs given): the job may run on a GPU node",
        )
    gpus = _visible_gpus()
    if gpus:
        return True, f"device: auto and CUDA device(s) {','.join(gpus)} visible here"
    return (
        False,
        "device: auto and no CUDA device visible here (CUDA_VISIBLE_DEVICES, nvidia-smi)",
    )


USES_GPU, _why = gpu_request(config["device"])
# Spread into a rule's resources: a job that will not use a GPU declares none.
GPU = {"gpu": 1} if USES_GPU else {}
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


def student_model(width):
    return {"arch": config["students"]["arch"], "width": width}


def run_outputs(folder):
    return {name.replace(".", "_"): f"{folder}/{name}" for name in RUN_FILES}


STUDENT_RUNS = expand(
    f"{STUDENT_DIR}/metrics.json",
    method=config["students"]["methods"],
    width=config["students"]["widths"],
    seed=config["students"]["seeds"],
)


# --- evaluation, figures, report ----------------------------------------------------------------
MODEL_BASE_CODE = code("models/__init__.py", "models/base.py")
MODEL_CODE = MODEL_BASE_CODE + code("models/transunet.py", "models/squeezeunet.py")
# Evaluating a run needs its own architecture only: a student edit leaves the teacher's evaluation.
EVAL_CODE = MODEL_BASE_CODE + code(
    "evaluate/volume.py",
    "evaluate/metrics.py",
    "data/dataset.py",
    "data/preprocess.py",
    "train/trainer.py",
    "devices.py",
)
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
    source = (
        f"phantom: {phantom['cases']} generated abdominal CT cases (seed {phantom['seed']})"
        if DATA["source"] == "phantom"
        else f"{DATA['source']}: {DATA['path'] or DATA['synapse_entity']}"
    )
    teacher = config["teacher"]["model"]
    return {
        "data source": source,
        "slices": f"{DATA['image_size']} x {DATA['image_size']} px, HU window {DATA['hu_window']}",
        "split": f"{DATA['split']['preset']} (seed {DATA['split']['seed']})",
        "teacher": ", ".join(f"{k} {v}" for k, v in teacher.items()),
        "students": f"{config['students']['arch']}, widths {', '.join(config['students']['widths'])}",
        "methods": ", ".join(config["students"]["methods"]),
        "seeds": ", ".join(str(s) for s in config["students"]["seeds"]),
        "epochs": f"teacher {config['teacher']['train'].get('epochs', config['train']['epochs'])}, "
        f"students {config['students']['train'].get('epochs', config['train']['epochs'])}",
        "device": config["device"],
    }


FIGURE_CODE = (
    package_files("figures", "explain")
    + MODEL_CODE
    + code("train/trainer.py", "data/dataset.py")
)
CONTEXT_CODE = (
    package_files("explain") + MODEL_CODE + code("train/trainer.py", "data/dataset.py")
)
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
