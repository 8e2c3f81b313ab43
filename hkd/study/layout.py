"""Where a study writes each of its outputs: every path under the study's ``out`` folder, written here once.

The workflow's rules take their outputs, logs and benchmarks from a :class:`Layout`; the run table
(:mod:`hkd.study.runs`) takes its runs' folders from it. A Snakemake wildcard is passed as its pattern
(``layout.student_dir("{method}", "{width}", "{seed}")``), a run's values as themselves. Standard library
only (Snakemake reads it when it parses the workflow).
"""

from __future__ import annotations

from dataclasses import dataclass

from hkd.run_files import RUN_FILES


@dataclass(frozen=True)
class Layout:
    """The output paths of the study whose ``out`` folder is ``out``."""

    out: str

    # --- every job's log and benchmark ---------------------------------------------------------
    def log(self, step: str, name: str | None = None) -> str:
        """The log of a job of ``step`` (one job), or of its job ``name`` (one job per name)."""
        return f"{self.out}/logs/{step}.log" if name is None else f"{self.out}/logs/{step}/{name}.log"

    def benchmark(self, step: str, name: str | None = None) -> str:
        """The time and memory Snakemake measured of a job (``benchmark:``), named as its log."""
        return f"{self.out}/benchmarks/{step}.tsv" if name is None else f"{self.out}/benchmarks/{step}/{name}.tsv"

    # --- data ------------------------------------------------------------------------------------
    @property
    def phantom(self) -> str:
        return f"{self.out}/raw/phantom"

    def download(self, source: str, archive: bool) -> str:
        """What ``hkd download`` writes: the source's archive, or its cases' folder."""
        return f"{self.out}/raw/{source}/" + ("RawData.zip" if archive else "data")

    def extracted(self, kind: str) -> str:
        """The folder an archive of source ``kind`` is extracted into."""
        return f"{self.out}/raw/{kind}/RawData"

    @property
    def split(self) -> str:
        return f"{self.out}/data/split.json"

    @property
    def prepared(self) -> str:
        return f"{self.out}/data/prepared"

    # --- the external cohort (data.external): only evaluated ------------------------------------
    @property
    def external_phantom(self) -> str:
        return f"{self.out}/raw/external/phantom"

    @property
    def external_split(self) -> str:
        return f"{self.out}/data/external/split.json"

    @property
    def external_prepared(self) -> str:
        return f"{self.out}/data/external/prepared"

    @property
    def teacher_external_eval(self) -> str:
        return f"{self.out}/eval/external/teacher.csv"

    def student_external_eval(self, run_name: str) -> str:
        """A student run's evaluation on the external cohort, by the run's name."""
        return f"{self.out}/eval/external/students/{run_name}.csv"

    # --- training --------------------------------------------------------------------------------
    @property
    def teacher_dir(self) -> str:
        return f"{self.out}/models/teacher"

    def teacher_cache(self, method: str) -> str:
        """The teacher's features for ``method``'s students, computed once (``teacher.cache``)."""
        return f"{self.teacher_dir}/cache/{method}.h5"

    def student_dir(self, method: str, width: str, seed) -> str:
        """The folder of the student run of ``method`` at student ``width`` (its label) and ``seed``."""
        return f"{self.out}/models/students/{method}/w{width}/s{seed}"

    @staticmethod
    def run_files(folder: str) -> dict[str, str]:
        """The files of the run in ``folder`` (:data:`hkd.run_files.RUN_FILES`), by a rule output's name for each:
        ``best_pt``, ``last_pt``, ``log_csv``, ``metrics_json``."""
        return {name.replace(".", "_"): f"{folder}/{name}" for name in RUN_FILES}

    @property
    def teacher_checkpoint(self) -> str:
        return self.run_files(self.teacher_dir)["best_pt"]

    def work(self, method: str | None = None, width: str | None = None, seed=None) -> str:
        """A training job's working folder (checkpoints to resume from): the teacher's, or a student run's."""
        if method is None:
            return f"{self.out}/work/teacher"
        return f"{self.out}/work/students/{method}/w{width}/s{seed}"

    def cohort(self, seed) -> str:
        """A lock-step cohort's store of its members' runs."""
        return f"{self.out}/cohorts/s{seed}"

    def cohort_manifest(self, seed) -> str:
        """What a cohort's job published, beside its store."""
        return f"{self.cohort(seed)}.json"

    @property
    def mlruns(self) -> str:
        """The study's MLflow store (``train.tracker: mlflow``)."""
        return f"{self.out}/mlruns"

    # --- evaluation and the report ---------------------------------------------------------------
    @property
    def teacher_eval(self) -> str:
        return f"{self.out}/eval/teacher.csv"

    def student_eval(self, run_name: str) -> str:
        """A student run's evaluation table, by the run's name (METHOD_wWIDTH_sSEED)."""
        return f"{self.out}/eval/students/{run_name}.csv"

    def table(self, name: str, ext: str = "csv") -> str:
        """A study table (``summary``, ``organs``, ``data``, ``cost``) as csv, md or html."""
        return f"{self.out}/tables/{name}.{ext}"

    def hypotheses(self, ext: str = "csv") -> str:
        return f"{self.out}/hypotheses.{ext}"

    @property
    def context(self) -> str:
        return f"{self.out}/context.csv"

    def figure(self, file: str) -> str:
        return f"{self.out}/figures/{file}"

    @property
    def overview(self) -> str:
        """The report's first page (an HTML fragment)."""
        return f"{self.out}/overview.html"

    # --- deployment ------------------------------------------------------------------------------
    def export(self, width: str, ext: str = "onnx") -> str:
        """A student's exported model (``onnx``) or its export report (``json``)."""
        return f"{self.out}/deploy/student_w{width}.{ext}"

    def segmentation(self, model: str, case: str, ext: str = "nii.gz") -> str:
        """A user's scan segmented by ``model`` (``nii.gz``), or its statistics (``json``)."""
        return f"{self.out}/segmentations/{model}/{case}.{ext}"
