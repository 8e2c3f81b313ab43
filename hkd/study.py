"""The study a validated configuration describes: its data source, its runs and every list the workflow's
rules are built from.

One :class:`Study` per configuration (after the schema's defaults and the config checks): the teacher
and the students, one run per method x student x seed (and per teacher-assistant chain x its students x
seed), each run's training config and folder, the lock-step cohorts, and what evaluation, figures, context
and deployment read. Standard library only, so
that the workflow, the tests and a plain ``python`` read it without torch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from hkd.chains import chain_label, is_chain
from hkd.data import sources
from hkd.data.scans import folder_scans
from hkd.devices import visible_gpus  # torch is imported lazily
from hkd.run_files import RUN_FILES

__all__ = ["GpuRequest", "Study", "gpu_request", "teacher_argument"]


@dataclass(frozen=True)
class GpuRequest:
    """Whether training jobs declare a GPU (`asks`), why, and whether they run under a cluster executor."""

    asks: bool
    why: str
    on_cluster: bool

    def resources(self, bundled: bool = False) -> dict:
        """The GPU request of a training job, spread into its resources; none for a job without a GPU.

        `gpu=1`; for rules that the SLURM profile bundles into group jobs (`bundled`), under a cluster
        executor, `gres="gpu:1"` instead: Snakemake adds up a number like `gpu` over a group's jobs that
        run side by side (four bundled students would ask for four GPUs), but passes an equal string
        through once, so a bundle asks SLURM for one GPU and its students share it. A job submitted on
        its own gets one GPU either way; on one machine `gpu=1` is what `--resources gpu=N` counts.
        """
        if not self.asks:
            return {}
        return {"gres": "gpu:1"} if bundled and self.on_cluster else {"gpu": 1}


def gpu_request(device: str, on_cluster: bool) -> GpuRequest:
    """Whether training jobs declare `resources: gpu=1`, and why, decided when the workflow is parsed.

    An explicit device decides by itself. With `auto` a job may land elsewhere: under a cluster
    executor (`on_cluster`) the job asks, so the scheduler gives it a GPU; on this machine it asks only
    when a CUDA device is visible.
    """
    if device.startswith("cuda"):
        return GpuRequest(True, f"device: {device}", on_cluster)
    if device != "auto":
        return GpuRequest(False, f"device: {device}", on_cluster)
    if on_cluster:
        return GpuRequest(
            True, "device: auto under a cluster executor (--jobs given): the job may run on a GPU node", on_cluster
        )
    gpus = visible_gpus()
    if gpus:
        return GpuRequest(True, f"device: auto and CUDA device(s) {','.join(gpus)} visible here", on_cluster)
    return GpuRequest(
        False, "device: auto and no CUDA device visible here (CUDA_VISIBLE_DEVICES, nvidia-smi)", on_cluster
    )


def teacher_argument(teacher: str | list) -> str:
    """The `hkd train` option that hands a student its teacher input (see :meth:`Study.teacher_input`)."""
    if not teacher:
        return ""
    flag = "--teacher-cache" if teacher.endswith(".h5") else "--teacher"
    return f"{flag} {teacher}"


def run_outputs(folder: str) -> dict[str, str]:
    """The files of a finished run in `folder`, named for a rule's outputs (`best_pt`, ...)."""
    return {name.replace(".", "_"): f"{folder}/{name}" for name in RUN_FILES}


class Study:
    """Everything the workflow derives from one validated configuration `config`."""

    def __init__(self, config: dict):
        self.config = config
        self.out = config["out"]
        self.data = config["data"]
        self.teacher_dir = f"{self.out}/models/teacher"
        # a student run's folder, by wildcards
        self.student_dir = f"{self.out}/models/students/{{method}}/w{{width}}/s{{seed}}"
        students = config["students"]
        self.methods = students["methods"]
        self.seeds = students["seeds"]
        # The students by label: SqueezeUNet at each of `students.widths` (the label is the width), then
        # the networks of `students.models` (any arch, by the label given there). Run names and folders
        # use the label.
        self.students = {
            str(w): {"arch": students["arch"], "width": w, "init": students["init"]} for w in students["widths"]
        } | dict(students["models"])
        # Teacher-assistant chains (students.chains): method label -> its method, assistant and students.
        self.chains = self._chains(students.get("chains", []))
        # One row per method x student x seed, then per chain x its students x seed: every list of runs
        # below is read from it.
        self.runs = [
            self._run(method, width, seed) for method in self.methods for width in self.students for seed in self.seeds
        ] + [
            self._run(label, width, seed)
            for label, chain in self.chains.items()
            for width in chain["students"]
            for seed in self.seeds
        ]
        self._data_source()

    def _run(self, method: str, width: str, seed) -> dict:
        return {
            "name": f"{method}_w{width}_s{seed}",
            "model": f"{method}_w{width}",
            "method": method,
            "width": width,
            "seed": seed,
            "dir": self.student_dir.format(method=method, width=width, seed=seed),
        }

    def _chains(self, entries: list[dict]) -> dict[str, dict]:
        """`students.chains`, checked: each entry's assistant is a run of the study (a method of
        `students.methods`, or an earlier chain, at one of the students), trained for every seed."""
        chains: dict[str, dict] = {}
        for i, entry in enumerate(entries):
            key = f"students.chains[{i}]"
            assistant = entry["assistant"]
            method, a_method, a_student = entry["method"], assistant["method"], str(assistant["student"])
            if method == "scratch" or is_chain(method):
                raise ValueError(f"config key {key}.method: '{method}' is not a distillation method")
            if a_method not in self.methods and a_method not in chains:
                raise ValueError(
                    f"config key {key}.assistant.method: '{a_method}' is neither in students.methods "
                    f"({', '.join(self.methods)}) nor an earlier chain ({', '.join(chains) or 'none'})"
                )
            if a_method == "scratch":
                raise ValueError(f"config key {key}.assistant.method: a scratch student is no assistant of a chain")
            for label in [a_student, *map(str, entry["students"])]:
                if label not in self.students:
                    raise ValueError(
                        f"config key {key}: no student labelled '{label}' (students: {', '.join(self.students)})"
                    )
            if a_method in chains and a_student not in chains[a_method]["students"]:
                raise ValueError(
                    f"config key {key}.assistant: chain '{a_method}' trains no student '{a_student}' "
                    f"(its students: {', '.join(chains[a_method]['students'])})"
                )
            label = chain_label(method, a_method, a_student)
            if label in chains:
                raise ValueError(f"config key {key}: the chain '{label}' is listed twice")
            chains[label] = {
                "method": method,
                "assistant_method": a_method,
                "assistant_student": a_student,
                "students": [str(s) for s in entry["students"]],
                "key": key,
            }
        if chains and self.config["students"]["lockstep"]:
            raise ValueError(
                "config keys students.chains and students.lockstep: a chain's student waits for its assistant, "
                "so it cannot step with it in one cohort; set students.lockstep: false"
            )
        return chains

    # --- data: what data.source is (hkd/data/sources.py) ----------------------------------------
    def _data_source(self) -> None:
        data, out = self.data, self.out
        self.source = sources.source_of(data)
        self.source_format = sources.case_format(data)  # hkd split/prepare --format
        self.reader = sources.FORMATS[self.source_format]  # the module that reads the case files
        self.packed = sources.packed(data)  # zip: extracted by the extract rule first
        self.downloads = sources.downloads(data)
        # What `hkd download` writes: the downloaded archive, or the downloaded cases' folder.
        self.downloaded = sources.download_target(data, out)
        # The zip the extract rule unpacks, downloaded or the user's.
        self.archive = self.downloaded if self.downloads else data["path"]
        self.extracted = "|".join(s.name for s in sources.SOURCES.values() if s.packed in ("zip", "either"))

    def raw_source(self) -> str:
        """The folder that holds the source cases."""
        if self.source.name == "phantom":
            return f"{self.out}/raw/phantom"
        if self.packed == "zip":
            return f"{self.out}/raw/{self.source.name}/RawData"
        return self.downloaded if self.downloads else self.data["path"]

    def source_files(self) -> list[str]:
        """The files of a user's source folder, as inputs: a folder's own mtime misses a label fixed in
        place, and a new or removed file changes the set of inputs, which reruns too."""
        folder = sources.user_folder(self.data)
        if folder is None or not os.path.isdir(folder):
            return []
        found = []
        for parent, dirs, files in os.walk(folder):
            # hidden folders hold no cases (e.g. a KiTS19 clone's .git)
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.extend(os.path.join(parent, f) for f in files if not f.startswith("."))
        return sorted(found)

    def split_file(self) -> str | list:
        """The split file of preset 'file', an input of the split rule (editing it reruns the split)."""
        split = self.data["split"]
        return split["file"] if split["preset"] == "file" else []

    # --- training ---------------------------------------------------------------------------------
    @property
    def student_label(self) -> str:
        """Wildcard constraint of a student label."""
        return "|".join(re.escape(label) for label in self.students)

    @property
    def distilled_methods(self) -> str:
        """Wildcard constraint of the distilled students' rules (scratch students have their own)."""
        return "|".join(re.escape(m) for m in self.methods if m != "scratch") or "(?!)"

    @property
    def chain_methods(self) -> str:
        """Wildcard constraint of the chains' rules (students taught by an assistant, a level later)."""
        return "|".join(re.escape(m) for m in self.chains) or "(?!)"

    def student_model(self, label) -> dict:
        """The model spec of the student labelled `label` (a width, or a key of `students.models`)."""
        if str(label) not in self.students:
            raise ValueError(
                f"config keys students.widths and students.models: no student labelled '{label}' "
                f"(students: {', '.join(self.students)})"
            )
        return self.students[str(label)]

    def student_key(self, label: str) -> str:
        """The config key that declares the student labelled `label`, for error messages."""
        return f"students.models.{label}" if label in self.config["students"]["models"] else f"students.widths ('{label}')"

    def train_config(self, section: str, model: dict, seed, method: str = "scratch") -> dict:
        """The JSON training config of one run: shared recipe, section overrides, model, method, seed.

        `train.threads` and `train.tracker` are no part of it: the job's threads and its live curves
        change no number of the run, so changing them retrains nothing.
        """
        config = self.config
        recipe = {**config["train"], **config[section]["train"]}
        recipe.pop("threads")
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

    def teacher_config(self) -> dict:
        """The teacher's training config."""
        teacher = self.config["teacher"]
        return self.train_config("teacher", teacher["model"], teacher["seed"])

    def student_config(self, label, seed, method: str) -> dict:
        """The training config of the student labelled `label`, of one seed, trained by `method` (a method,
        or a chain's label: its method, with the assistant's model as the teacher)."""
        chain = self.chains.get(method)
        if chain is None:
            return self.train_config("students", self.student_model(label), seed, method)
        cfg = self.train_config("students", self.student_model(label), seed, chain["method"])
        return cfg | {"teacher": self.student_model(chain["assistant_student"])}

    def teacher_input(self, method: str, seed=None) -> str | list:
        """What a student run of `method` (of `seed`) needs of its teacher: nothing, the teacher's feature
        cache or checkpoint, or, for a chain, the checkpoint of its assistant of the same seed."""
        chain = self.chains.get(method)
        if chain is not None:
            if seed is None:
                raise ValueError(f"the teacher of chain '{method}' is a run of one seed: give the seed")
            folder = self.student_dir.format(
                method=chain["assistant_method"], width=chain["assistant_student"], seed=seed
            )
            return f"{folder}/best.pt"
        if method == "scratch":
            return []
        if method in self.config["teacher"]["cache"]:
            return f"{self.teacher_dir}/cache/{method}.h5"
        return f"{self.teacher_dir}/best.pt"

    def cohort_runs(self, seed) -> dict[str, dict]:
        """The students of one seed, a lock-step cohort: member name (METHOD_wWIDTH) -> run."""
        if str(seed) not in {str(s) for s in self.seeds}:
            raise ValueError(f"config key students.seeds: the study has no seed {seed} ({self.seeds})")
        return {run["model"]: run for run in self.runs if str(run["seed"]) == str(seed)}

    def cohort_members(self, seed) -> dict[str, dict]:
        """The students of one seed as lock-step cohort members: name -> training config."""
        return {
            name: self.student_config(run["width"], seed, run["method"]) for name, run in self.cohort_runs(seed).items()
        }

    def cohort_folders(self, seed) -> dict[str, str]:
        """Where a cohort publishes each member's run: name -> run folder."""
        return {name: run["dir"] for name, run in self.cohort_runs(seed).items()}

    def preflight_runs(self) -> list[tuple[str, str, dict]]:
        """Every run's recipe, model and method once, for the check before any job starts:
        (role, config key of its model, training config), the teacher first."""
        return [("teacher", "teacher.model", self.train_config("teacher", self.config["teacher"]["model"], 0))] + [
            ("students", self.student_key(label), self.student_config(label, 0, method))
            for method in self.methods
            for label in self.students
        ] + [
            ("students", self.student_key(label), self.student_config(label, 0, name))
            for name, chain in self.chains.items()
            for label in chain["students"]
        ]

    @property
    def student_runs(self) -> list[str]:
        """Every student run's metrics file."""
        return [f"{run['dir']}/metrics.json" for run in self.runs]

    # --- evaluation, figures, report ----------------------------------------------------------------
    @property
    def eval_files(self) -> list[str]:
        """The evaluation table of every run, the teacher's first."""
        return [f"{self.out}/eval/teacher.csv"] + [f"{self.out}/eval/students/{run['name']}.csv" for run in self.runs]

    @property
    def figure_runs(self) -> list[dict]:
        """Every run for the figures: the training curves and gradient ratios show all seeds, the
        qualitative figures the checkpoints of the teacher and of the students of the first seed."""
        first_seed = self.seeds[0]
        teacher = {
            "name": "teacher",
            "model": "teacher",
            "method": "teacher",
            "width": None,
            "seed": None,
            "checkpoint": f"{self.teacher_dir}/best.pt",
            "log": f"{self.teacher_dir}/log.csv",
        }
        return [teacher] + [
            {key: run[key] for key in ("name", "model", "method", "width", "seed")}
            | {"log": f"{run['dir']}/log.csv"}
            | ({"checkpoint": f"{run['dir']}/best.pt"} if run["seed"] == first_seed else {})
            for run in self.runs
        ]

    @property
    def context_runs(self) -> list[dict]:
        """Every student run for the context measure, by its checkpoint."""
        return [
            {key: run[key] for key in ("method", "width", "seed")}
            | {"model": run["name"], "checkpoint": f"{run['dir']}/best.pt"}
            for run in self.runs
        ]

    def description(self) -> dict[str, str]:
        """What the configuration runs, in words, for the report's first page."""
        config, data = self.config, self.data
        students = config["students"]
        teacher = config["teacher"]["model"]
        return {
            "data source": sources.describe(data),
            "slices": f"{data['image_size']} x {data['image_size']} px, HU window {data['hu_window']} "
            f"scaled to {data['scale']}",
            "task": f"{data['task']}: {', '.join(data['classes'][1:])}",
            "split": f"{data['split']['preset']} (seed {data['split']['seed']})",
            "teacher": ", ".join(f"{k} {v}" for k, v in teacher.items()),
            "students": "; ".join(
                ([f"{students['arch']}, widths {', '.join(students['widths'])}"] if students["widths"] else [])
                + [
                    f"{label}: " + ", ".join(f"{k} {v}" for k, v in spec.items())
                    for label, spec in students["models"].items()
                ]
            ),
            "methods": ", ".join(students["methods"]),
            "seeds": ", ".join(str(s) for s in students["seeds"]),
            "epochs": f"teacher {config['teacher']['train'].get('epochs', config['train']['epochs'])}, "
            f"students {students['train'].get('epochs', config['train']['epochs'])}",
            "device": config["device"],
        }

    # --- deployment ---------------------------------------------------------------------------------
    @property
    def width_runs(self) -> dict[str, list[str]]:
        """Per student, the checkpoints among which export and predict choose: every method and seed of
        it (chosen by validation Dice when the job runs, never by test Dice)."""
        return {
            width: [f"{run['dir']}/best.pt" for run in self.runs if str(run["width"]) == str(width)]
            for width in self.students
        }

    @property
    def chain_runs(self) -> list[str]:
        """Every chain student's metrics file (none without students.chains)."""
        return [f"{run['dir']}/metrics.json" for run in self.runs if run["method"] in self.chains]

    @property
    def cost_models(self) -> dict[str, str]:
        """The checkpoints whose cost is measured: the cost of an architecture does not depend on its
        weights, so one run per student."""
        return {"teacher": f"{self.teacher_dir}/best.pt"} | {
            width: runs[0] for width, runs in self.width_runs.items() if runs
        }

    @property
    def exports(self) -> list[str]:
        """The ONNX files the study delivers, one per trained student: with deploy.export, or when
        deploy.scans needs them."""
        deploy = self.config["deploy"]
        if not (deploy["export"] or deploy["scans"]):
            return []
        return [f"{self.out}/deploy/student_w{width}.onnx" for width, runs in self.width_runs.items() if runs]

    @property
    def scan_models(self) -> dict[str, str]:
        """The models that segment the user's scans: the teacher and each student's exported ONNX."""
        return {"teacher": f"{self.teacher_dir}/best.pt"} | {
            f"student_w{width}": f"{self.out}/deploy/student_w{width}.onnx"
            for width, runs in self.width_runs.items()
            if runs
        }

    @cached_property
    def scans(self) -> dict[str, str]:
        """Case name -> the user's scan to segment (deploy.scans: a folder of .nii/.nii.gz files; none without)."""
        folder = self.config["deploy"]["scans"]
        if not folder:
            return {}
        return {case: str(path) for case, path in folder_scans(Path(folder), "config key deploy.scans:").items()}

    @property
    def segmentations(self) -> list[str]:
        """Each scan's segmentation by each model, one job each (a bad scan fails only its own; a scan that
        changes is segmented again), with its statistics beside it."""
        return [f"{self.out}/segmentations/{model}/{case}.{ext}" for model in self.scan_models
                for case in self.scans for ext in ("nii.gz", "json")]
