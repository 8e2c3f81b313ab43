"""The training recipe of every run of a study: the shared ``train:`` section under the role's own
(``teacher.train``, ``students.train``), the model, the method and its options, the seed and the device,
as the JSON that ``hkd train`` takes. Standard library only (Snakemake reads it when it parses the workflow).
"""

from __future__ import annotations

from hkd.study.runs import RunTable


class Recipes:
    """The training configs of the runs of ``runs`` (a :class:`RunTable` of a validated config)."""

    def __init__(self, runs: RunTable):
        self.runs = runs
        self.config = runs.config

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
        chain = self.runs.chains.get(method)
        if chain is None:
            return self.train_config("students", self.runs.student_model(label), seed, method)
        cfg = self.train_config("students", self.runs.student_model(label), seed, chain["method"])
        return cfg | {"teacher": self.runs.student_model(chain["assistant_student"])}

    def cohort_members(self, seed) -> dict[str, dict]:
        """The students of one seed as lock-step cohort members: name -> training config."""
        return {
            name: self.student_config(run["width"], seed, run["method"])
            for name, run in self.runs.cohort_runs(seed).items()
        }

    def preflight_runs(self) -> list[tuple[str, str, dict]]:
        """Every run's recipe, model and method once, for the check before any job starts:
        (role, config key of its model, training config), the teacher first."""
        return [("teacher", "teacher.model", self.train_config("teacher", self.config["teacher"]["model"], 0))] + [
            ("students", self.runs.student_key(label), self.student_config(label, 0, method))
            for method in self.runs.methods
            for label in self.runs.students
        ] + [
            ("students", self.runs.student_key(label), self.student_config(label, 0, name))
            for name, chain in self.runs.chains.items()
            for label in chain["students"]
        ]

