"""The study's run table: its teacher and students, one run per method x student x seed (and per
teacher-assistant chain x its students x seed), the lock-step cohorts, and every list of runs the rules
read (evaluations, figures, context, cost, exports, segmentations). Each run's folder and files come
from the study's :class:`~hkd.study.layout.Layout`. Standard library only (Snakemake reads it when it
parses the workflow).
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path

from hkd.chains import read_chains
from hkd.data import sources
from hkd.data.scans import folder_scans
from hkd.study.layout import Layout


class RunTable:
    """Every run of a validated configuration ``config``, with its outputs under ``layout``."""

    def __init__(self, config: dict, layout: Layout):
        self.config = config
        self.layout = layout
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
        self.chains = read_chains(students.get("chains", []), self.methods, self.students, students["lockstep"])
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

    def _run(self, method: str, width: str, seed) -> dict:
        return {
            "name": f"{method}_w{width}_s{seed}",
            "model": f"{method}_w{width}",
            "method": method,
            "width": width,
            "seed": seed,
            "dir": self.layout.student_dir(method, width, seed),
        }

    # --- wildcard constraints of the training and evaluation rules ----------------------------------
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
        if label in self.config["students"]["models"]:
            return f"students.models.{label}"
        return f"students.widths ('{label}')"

    # --- what each run reads, and the cohorts ----------------------------------------------------------
    def teacher_input(self, method: str, seed=None) -> str | list:
        """What a student run of `method` (of `seed`) needs of its teacher: nothing, the teacher's feature
        cache or checkpoint, or, for a chain, the checkpoint of its assistant of the same seed."""
        chain = self.chains.get(method)
        if chain is not None:
            if seed is None:
                raise ValueError(f"the teacher of chain '{method}' is a run of one seed: give the seed")
            folder = self.layout.student_dir(chain["assistant_method"], chain["assistant_student"], seed)
            return self.layout.run_files(folder)["best_pt"]
        if method == "scratch":
            return []
        if method in self.config["teacher"]["cache"]:
            return self.layout.teacher_cache(method)
        return self.layout.teacher_checkpoint

    def cohort_runs(self, seed) -> dict[str, dict]:
        """The students of one seed, a lock-step cohort: member name (METHOD_wWIDTH) -> run."""
        if str(seed) not in {str(s) for s in self.seeds}:
            raise ValueError(f"config key students.seeds: the study has no seed {seed} ({self.seeds})")
        return {run["model"]: run for run in self.runs if str(run["seed"]) == str(seed)}

    def cohort_folders(self, seed) -> dict[str, str]:
        """Where a cohort publishes each member's run: name -> run folder."""
        return {name: run["dir"] for name, run in self.cohort_runs(seed).items()}

    @property
    def student_runs(self) -> list[str]:
        """Every student run's metrics file."""
        return [self.layout.run_files(run["dir"])["metrics_json"] for run in self.runs]

    # --- evaluation, figures, report ----------------------------------------------------------------
    @property
    def eval_files(self) -> list[str]:
        """The evaluation table of every run, the teacher's first."""
        return [self.layout.teacher_eval] + [self.layout.student_eval(run["name"]) for run in self.runs]

    @property
    def external_eval_files(self) -> list[str]:
        """The evaluation table of every run on the external cohort (data.external; none without), teacher first."""
        if sources.external_kind(self.config["data"]) == "none":
            return []
        return [self.layout.teacher_external_eval] + [self.layout.student_external_eval(r["name"]) for r in self.runs]

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
            "checkpoint": self.layout.teacher_checkpoint,
            "log": self.layout.run_files(self.layout.teacher_dir)["log_csv"],
        }
        return [teacher] + [
            {key: run[key] for key in ("name", "model", "method", "width", "seed")}
            | {"log": self.layout.run_files(run["dir"])["log_csv"]}
            | ({"checkpoint": self.layout.run_files(run["dir"])["best_pt"]} if run["seed"] == first_seed else {})
            for run in self.runs
        ]

    @property
    def context_runs(self) -> list[dict]:
        """Every student run for the context measure, by its checkpoint."""
        return [
            {key: run[key] for key in ("method", "width", "seed")}
            | {"model": run["name"], "checkpoint": self.layout.run_files(run["dir"])["best_pt"]}
            for run in self.runs
        ]

    # --- deployment ---------------------------------------------------------------------------------
    @property
    def width_runs(self) -> dict[str, list[str]]:
        """Per student, the checkpoints among which export and predict choose: every method and seed of
        it (chosen by validation Dice when the job runs, never by test Dice)."""
        return {
            width: [self.layout.run_files(r["dir"])["best_pt"] for r in self.runs if str(r["width"]) == str(width)]
            for width in self.students
        }

    @property
    def chain_runs(self) -> list[str]:
        """Every chain student's metrics file (none without students.chains)."""
        return [self.layout.run_files(run["dir"])["metrics_json"] for run in self.runs if run["method"] in self.chains]

    @property
    def cost_models(self) -> dict[str, str]:
        """The checkpoints whose cost is measured: the cost of an architecture does not depend on its
        weights, so one run per student."""
        return {"teacher": self.layout.teacher_checkpoint} | {
            width: runs[0] for width, runs in self.width_runs.items() if runs
        }

    @property
    def exports(self) -> list[str]:
        """The ONNX files the study delivers, one per trained student: with deploy.export, or when
        deploy.scans needs them."""
        deploy = self.config["deploy"]
        if not (deploy["export"] or deploy["scans"]):
            return []
        return [self.layout.export(width) for width, runs in self.width_runs.items() if runs]

    @property
    def scan_models(self) -> dict[str, str]:
        """The models that segment the user's scans: the teacher and each student's exported ONNX."""
        return {"teacher": self.layout.teacher_checkpoint} | {
            f"student_w{width}": self.layout.export(width)
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
        return [self.layout.segmentation(model, case, ext) for model in self.scan_models
                for case in self.scans for ext in ("nii.gz", "json")]
