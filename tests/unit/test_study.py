"""The study model (hkd/study.py) read directly from a config: no workflow is parsed, no job planned.

The configs are the workflow's: config.yaml with a patch merged in and the schema's defaults filled by
the validator the workflow uses.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import textwrap

import pytest
from helpers import REPO, TINY_STUDENT, default_config, merge
from snakemake.utils import validate

from hkd.data import sources
from hkd.errors import DataError
from hkd.run_files import RUN_FILES
from hkd.figures.study_description import describe_study
from hkd.study import Layout, Study
from hkd.study.scheduling import gpu_request, teacher_argument

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
OUT = "results/default"  # config.yaml's out


def study(patch: dict | None = None) -> Study:
    cfg = merge(default_config(), copy.deepcopy(patch or {}))
    validate(cfg, str(SCHEMA), set_default=True)
    return Study(cfg)


# --- the run table -----------------------------------------------------------------------------------

def test_one_run_per_method_width_and_seed_named_and_placed_by_them():
    s = study({"students": {"widths": ["0.4M", "1.5"], "seeds": [0, 1, 2], "methods": ["scratch", "logits"]}})
    assert len(s.runs.runs) == 2 * 2 * 3
    assert [(r["method"], r["width"], r["seed"]) for r in s.runs.runs[:4]] == [
        ("scratch", "0.4M", 0), ("scratch", "0.4M", 1), ("scratch", "0.4M", 2), ("scratch", "1.5", 0)]
    run = s.runs.runs[-1]
    assert run == {"name": "logits_w1.5_s2", "model": "logits_w1.5", "method": "logits", "width": "1.5", "seed": 2,
                   "dir": f"{OUT}/models/students/logits/w1.5/s2"}
    assert len({r["dir"] for r in s.runs.runs}) == len(s.runs.runs)
    assert s.runs.student_runs[0] == f"{OUT}/models/students/scratch/w0.4M/s0/metrics.json"
    assert s.runs.eval_files == [f"{OUT}/eval/teacher.csv"] + [f"{OUT}/eval/students/{r['name']}.csv" for r in s.runs.runs]


def test_a_students_models_entry_is_a_student_by_its_label():
    spec = {"arch": "module", "name": "usernets:Net"}
    s = study({"students": {"widths": ["0.4M"], "models": {"net": spec}, "seeds": [0], "methods": ["scratch"]}})
    assert list(s.runs.students) == ["0.4M", "net"]
    assert s.runs.student_model("net") == spec
    assert s.runs.student_model("0.4M") == {"arch": "squeezeunet", "width": "0.4M", "init": "he"}
    assert [r["name"] for r in s.runs.runs] == ["scratch_w0.4M_s0", "scratch_wnet_s0"]
    assert s.runs.student_key("net") == "students.models.net"
    assert s.runs.student_key("0.4M") == "students.widths ('0.4M')"
    assert "net: arch module, name usernets:Net" in describe_study(s.config)["students"]


def test_wildcard_constraints_match_exactly_the_study_labels_and_distilled_methods():
    import re

    s = study({"students": {"widths": ["0.4M", "1.5"], "methods": ["scratch", "logits", "latent"]}})
    label = re.compile(f"^(?:{s.runs.student_label})$")
    assert label.match("0.4M") and label.match("1.5") and not label.match("0x4M") and not label.match("1")
    assert s.runs.distilled_methods == "logits|latent"
    assert not re.match(f"^(?:{study({'students': {'methods': ['scratch']}}).runs.distilled_methods})$", "scratch")


def test_run_outputs_are_the_run_files_by_rule_output_name():
    assert RUN_FILES == ("best.pt", "last.pt", "log.csv", "metrics.json")
    assert Layout.run_files("a/b") == {"best_pt": "a/b/best.pt", "last_pt": "a/b/last.pt", "log_csv": "a/b/log.csv",
                                  "metrics_json": "a/b/metrics.json"}


# --- training configs ----------------------------------------------------------------------------------

def test_train_config_merges_recipe_section_model_method_and_seed_without_threads_or_tracker():
    s = study({"train": {"epochs": 12, "lr": 0.003, "threads": 3, "tracker": "mlflow"},
               "students": {"train": {"epochs": 5, "augment": "none"}},
               "distill": {"logits": {"temperature": 2.0}}})
    teacher = s.recipes.teacher_config()
    assert teacher["epochs"] == 30 and teacher["lr"] == 0.003 and teacher["augment"] == "transunet"  # teacher.train
    assert teacher["model"] == s.config["teacher"]["model"] and teacher["method"] == "scratch"
    assert teacher["teacher"] is None and teacher["seed"] == 0 and teacher["device"] == "auto"

    student = s.recipes.student_config("1.5", "2", "logits")
    assert student["epochs"] == 5 and student["augment"] == "none" and student["lr"] == 0.003
    assert student["seed"] == 2  # a wildcard's string becomes the run's number
    assert student["model"] == s.runs.student_model("1.5")
    assert student["method"] == "logits" and student["method_options"] == {"temperature": 2.0}
    assert student["teacher"] == s.config["teacher"]["model"]
    for cfg in (teacher, student):
        assert "threads" not in cfg and "tracker" not in cfg  # they change no number of a run
    assert s.recipes.student_config("1.5", 0, "scratch")["teacher"] is None


def test_teacher_input_is_nothing_the_cache_or_the_checkpoint():
    s = study({"teacher": {"cache": ["logits"]}, "students": {"methods": ["scratch", "logits", "latent"],
                                                             "train": {"augment": "none"}}})
    assert s.runs.teacher_input("scratch") == []
    assert s.runs.teacher_input("logits") == f"{OUT}/models/teacher/cache/logits.h5"
    assert s.runs.teacher_input("latent") == f"{OUT}/models/teacher/best.pt"
    assert teacher_argument([]) == ""
    assert teacher_argument(s.runs.teacher_input("logits")) == f"--teacher-cache {OUT}/models/teacher/cache/logits.h5"
    assert teacher_argument(s.runs.teacher_input("latent")) == f"--teacher {OUT}/models/teacher/best.pt"


def test_preflight_runs_list_the_teacher_then_each_method_and_student_once():
    s = study({"students": {"widths": ["0.4M"], "models": {"net": TINY_STUDENT}, "methods": ["scratch", "logits"],
                            "seeds": [3, 4]}})
    runs = s.recipes.preflight_runs()
    assert [(role, key) for role, key, _ in runs] == [
        ("teacher", "teacher.model"),
        ("students", "students.widths ('0.4M')"), ("students", "students.models.net"),
        ("students", "students.widths ('0.4M')"), ("students", "students.models.net")]
    assert [cfg["method"] for _, _, cfg in runs[1:]] == ["scratch", "scratch", "logits", "logits"]
    assert runs[2][2]["model"] == TINY_STUDENT
    assert all(cfg["seed"] == 0 for _, _, cfg in runs)


# --- cohorts, figures, context ----------------------------------------------------------------------------

def test_a_cohort_is_the_students_of_one_seed():
    s = study({"students": {"widths": ["0.4M", "1.5"], "seeds": [0, 1], "methods": ["scratch", "logits"]}})
    runs = s.runs.cohort_runs("1")
    assert sorted(runs) == ["logits_w0.4M", "logits_w1.5", "scratch_w0.4M", "scratch_w1.5"]
    assert all(run["seed"] == 1 for run in runs.values())
    members = s.recipes.cohort_members(1)
    assert members["logits_w1.5"] == s.recipes.student_config("1.5", 1, "logits")
    assert s.runs.cohort_folders(1)["scratch_w0.4M"] == f"{OUT}/models/students/scratch/w0.4M/s1"


def test_figure_runs_show_every_log_and_the_checkpoints_of_the_first_seed_only():
    s = study({"students": {"widths": ["0.4M"], "seeds": [2, 0], "methods": ["scratch", "logits"]}})
    runs = s.runs.figure_runs
    assert runs[0] == {"name": "teacher", "model": "teacher", "method": "teacher", "width": None, "seed": None,
                       "checkpoint": f"{OUT}/models/teacher/best.pt", "log": f"{OUT}/models/teacher/log.csv"}
    students = runs[1:]
    assert [r["log"] for r in students] == [f"{r['dir']}/log.csv" for r in s.runs.runs]
    # the first seed listed (2), not the smallest
    assert [r["name"] for r in students if "checkpoint" in r] == ["scratch_w0.4M_s2", "logits_w0.4M_s2"]
    assert students[0]["checkpoint"] == f"{OUT}/models/students/scratch/w0.4M/s2/best.pt"
    assert set(students[1]) == {"name", "model", "method", "width", "seed", "log"}


def test_context_runs_are_every_student_by_checkpoint():
    s = study()
    assert len(s.runs.context_runs) == len(s.runs.runs)
    assert s.runs.context_runs[0] == {"method": "scratch", "width": "0.4M", "seed": 0, "model": "scratch_w0.4M_s0",
                                 "checkpoint": f"{OUT}/models/students/scratch/w0.4M/s0/best.pt"}


def test_description_says_what_the_default_study_runs():
    d = describe_study(study().config)
    assert d["data source"] == "phantom: 50 generated abdominal CT cases (seed 0)"
    assert d["slices"] == "48 x 48 px, HU window [-125, 275] scaled to [0, 1]"
    assert d["task"].endswith(": spleen, right_kidney, left_kidney, gallbladder, liver, stomach, aorta, pancreas")
    assert d["split"] == "random (seed 0)"
    assert d["teacher"].startswith("arch transunet, hidden_size 128")
    assert d["students"] == "squeezeunet, widths 0.4M, 1.5"
    assert d["methods"] == "scratch, logits, latent" and d["seeds"] == "0, 1, 2"
    assert d["epochs"] == "teacher 30, students 12" and d["device"] == "auto"


# --- data source ------------------------------------------------------------------------------------------

def test_downloaded_sources_say_what_hkd_download_fetches():
    synapse = study({"data": {"source": "synapse", "md5": "0123456789abcdef0123456789abcdef"}})
    assert sources.download_arguments(synapse.config["data"]) == "--entity syn3379050 --md5 0123456789abcdef0123456789abcdef"
    assert synapse.data.downloaded == f"{OUT}/raw/synapse/RawData.zip" == synapse.data.archive
    assert synapse.data.raw_source() == f"{OUT}/raw/synapse/RawData"

    kits = study({"data": {"source": "kits19", "kits19": {"cases": 5}}})
    assert sources.download_arguments(kits.config["data"]).startswith("--source kits19 --cases 5 --imaging-url '")
    assert kits.data.raw_source() == f"{OUT}/raw/kits19/data"
    assert describe_study(kits.config)["data source"] == "kits19: downloaded, cases 0-4"


def test_a_users_folder_is_read_file_by_file_skipping_hidden_ones(tmp_path):
    (tmp_path / "Training" / "img").mkdir(parents=True)
    (tmp_path / "Training" / "img" / "img0001.nii.gz").write_bytes(b"")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / ".DS_Store").write_text("")
    split = tmp_path / "split.json"
    split.write_text("{}")
    s = study({"data": {"source": "folder", "path": str(tmp_path), "split": {"preset": "file", "file": str(split)}}})
    assert s.data.raw_source() == str(tmp_path)
    assert s.data.source_files() == [str(tmp_path / "Training" / "img" / "img0001.nii.gz"), str(split)]
    assert s.data.split_file() == str(split)
    assert study().data.split_file() == [] and study().data.source_files() == []


def test_an_unknown_data_source_names_the_key():
    cfg = merge(default_config(), {"data": {"source": "phantom"}})
    validate(cfg, str(SCHEMA), set_default=True)
    cfg["data"]["source"] = "ftp"
    with pytest.raises(DataError, match="config key data.source: unknown source 'ftp'"):
        Study(cfg)


def test_an_unknown_student_or_seed_names_the_keys():
    s = study()
    with pytest.raises(ValueError, match=r"students.widths and students.models: no student labelled '2.0'"):
        s.runs.student_model("2.0")
    with pytest.raises(ValueError, match=r"students.seeds: the study has no seed 7"):
        s.recipes.cohort_members("7")


# --- deployment --------------------------------------------------------------------------------------------

def test_each_width_exports_one_student_and_is_costed_by_its_first_run(tmp_path):
    s = study({"students": {"widths": ["0.4M", "1.5"], "seeds": [0, 1], "methods": ["scratch", "logits"]}})
    assert s.runs.width_runs["1.5"] == [f"{OUT}/models/students/{m}/w1.5/s{seed}/best.pt"
                                   for m in ("scratch", "logits") for seed in (0, 1)]
    assert s.runs.cost_models == {"teacher": f"{OUT}/models/teacher/best.pt",
                             "0.4M": f"{OUT}/models/students/scratch/w0.4M/s0/best.pt",
                             "1.5": f"{OUT}/models/students/scratch/w1.5/s0/best.pt"}
    assert s.runs.exports == [f"{OUT}/deploy/student_w0.4M.onnx", f"{OUT}/deploy/student_w1.5.onnx"]
    assert s.runs.segmentations == []  # no deploy.scans
    assert study({"deploy": {"export": False}}).runs.exports == []
    folder = tmp_path / "my_scans"
    folder.mkdir()
    for name in ("b.nii", "a.nii.gz", "notes.txt", ".hidden.nii.gz"):
        (folder / name).write_bytes(b"")
    scans = study({"deploy": {"export": False, "scans": str(folder)}})
    assert len(scans.runs.exports) == 2  # the scans need them
    assert scans.runs.scans == {"a": str(folder / "a.nii.gz"), "b": str(folder / "b.nii")}
    assert scans.runs.segmentations == [f"{OUT}/segmentations/{m}/{case}.{ext}" for m in ("teacher", "student_w0.4M",
                                                                                     "student_w1.5")
                                   for case in ("a", "b") for ext in ("nii.gz", "json")]
    (folder / "a.nii").write_bytes(b"")
    with pytest.raises(ValueError, match=r"config key deploy.scans: .*a.nii.gz: case a is also stored as a.nii;"):
        study({"deploy": {"scans": str(folder)}}).runs.scans


# --- the GPU request ------------------------------------------------------------------------------------------

def test_gpu_request_follows_the_device_the_cluster_and_the_visible_gpus(monkeypatch):
    assert gpu_request("cuda:1", on_cluster=False).asks
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert not gpu_request("cpu", on_cluster=True).asks
    seen = gpu_request("auto", on_cluster=False)
    assert seen.asks and seen.why == "device: auto and CUDA device(s) 0,1 visible here"
    assert seen.resources() == seen.resources(bundled=True) == {"gpu": 1}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    none = gpu_request("auto", on_cluster=False)
    assert not none.asks and none.resources(bundled=True) == {}
    cluster = gpu_request("auto", on_cluster=True)
    assert cluster.asks and "cluster executor" in cluster.why
    # a bundle of students shares one GPU: a string Snakemake passes on once, not a number it adds up
    assert cluster.resources(bundled=True) == {"gres": "gpu:1"} and cluster.resources() == {"gpu": 1}


# --- the standard library only -----------------------------------------------------------------------------------

def test_the_study_model_imports_only_the_standard_library():
    """Snakemake reads it where hkd's requirements may be missing (--use-conda): it must import without them."""
    script = textwrap.dedent("""
        import sys
        class Blocked:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"torch", "numpy", "yaml", "h5py", "nibabel", "snakemake"}:
                    raise ImportError(f"blocked: {name}")
        sys.meta_path.insert(0, Blocked())
        before = set(sys.modules)
        import hkd.study
        study = hkd.study.Study  # noqa: F841
        new = {m.split(".")[0] for m in set(sys.modules) - before}
        print(sorted(new - set(sys.stdlib_module_names) - {"hkd"}))
    """)
    run = subprocess.run([sys.executable, "-S", "-c", script], check=False, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


# --- teacher-assistant chains -------------------------------------------------------------------------

CHAINS = {"students": {"widths": ["0.4M", "1.5"], "seeds": [0, 1], "methods": ["scratch", "latent", "logits"],
                       "chains": [{"method": "latent", "students": ["0.4M"],
                                   "assistant": {"method": "latent", "student": "1.5"}},
                                  {"method": "logits", "students": ["0.4M"],
                                   "assistant": {"method": "latent@latent_w1.5", "student": "0.4M"}}]}}


def test_a_chain_adds_its_runs_taught_by_the_assistant_of_the_same_seed():
    s = study(CHAINS)
    chained = [r for r in s.runs.runs if "@" in r["method"]]
    assert [r["name"] for r in chained] == ["latent@latent_w1.5_w0.4M_s0", "latent@latent_w1.5_w0.4M_s1",
                                            "logits@latent@latent_w1.5_w0.4M_w0.4M_s0",
                                            "logits@latent@latent_w1.5_w0.4M_w0.4M_s1"]
    assert len(s.runs.runs) == 3 * 2 * 2 + 4
    # the teacher teaches the assistant; the assistant (same seed) the chain's student; a chain may teach a chain
    assert s.runs.teacher_input("latent", 1) == f"{OUT}/models/teacher/best.pt"
    assert s.runs.teacher_input("latent@latent_w1.5", 1) == f"{OUT}/models/students/latent/w1.5/s1/best.pt"
    assert s.runs.teacher_input("logits@latent@latent_w1.5_w0.4M", 0) == \
        f"{OUT}/models/students/latent@latent_w1.5/w0.4M/s0/best.pt"
    cfg = s.recipes.student_config("0.4M", 1, "latent@latent_w1.5")
    assert cfg["method"] == "latent" and cfg["seed"] == 1 and cfg["model"] == s.runs.student_model("0.4M")
    assert cfg["teacher"] == s.runs.student_model("1.5")  # the assistant's checkpoint is checked against it
    assert {k: v for k, v in cfg.items() if k != "teacher"} == \
        {k: v for k, v in s.recipes.student_config("0.4M", 1, "latent").items() if k != "teacher"}
    assert s.runs.chain_methods.replace("\\", "").split("|") == ["latent@latent_w1.5", "logits@latent@latent_w1.5_w0.4M"]
    assert "@" not in s.runs.distilled_methods
    assert s.runs.chain_runs == [f"{r['dir']}/metrics.json" for r in chained] and study().runs.chain_runs == []
    assert [c[2]["method"] for c in s.recipes.preflight_runs()[-2:]] == ["latent", "logits"]


@pytest.mark.parametrize("chain, message", [
    ({"method": "latent", "students": ["0.4M"], "assistant": {"method": "dkd", "student": "1.5"}},
     "students.chains[0].assistant.method: 'dkd' is neither in students.methods"),
    ({"method": "latent", "students": ["0.4M"], "assistant": {"method": "scratch", "student": "1.5"}},
     "a scratch student is no assistant"),
    ({"method": "scratch", "students": ["0.4M"], "assistant": {"method": "latent", "student": "1.5"}},
     "students.chains[0].method: 'scratch' is not a distillation method"),
    ({"method": "latent", "students": ["4M"], "assistant": {"method": "latent", "student": "1.5"}},
     "students.chains[0]: no student labelled '4M'"),
])
def test_a_chain_that_names_no_run_of_the_study_is_an_error_naming_its_key(chain, message):
    patch = {"students": {"widths": ["0.4M", "1.5"], "methods": ["scratch", "latent"], "chains": [chain]}}
    with pytest.raises(ValueError, match=re.escape(message)):
        study(patch)


def test_chains_cannot_step_in_a_lockstep_cohort():
    with pytest.raises(ValueError, match="students.chains and students.lockstep"):
        study(merge(copy.deepcopy(CHAINS), {"students": {"lockstep": True}}))


def test_a_trained_student_teaches_another_as_its_assistant(prepared, student_ckpt, tmp_path, capsys):
    """What a chain's job runs: `hkd train` with the assistant's checkpoint as the teacher and its spec as the
    configured teacher; a checkpoint of another model is refused, naming the file."""
    import json

    import torch

    from hkd.cli import main

    assistant = json.loads(torch.load(student_ckpt, map_location="cpu", weights_only=False)["spec"])
    cfg = {"model": TINY_STUDENT, "epochs": 1, "batch_size": 8, "device": "cpu", "optimizer": "adamw", "lr": 0.003,
           "method": "latent", "teacher": assistant}
    out = tmp_path / "chain"
    assert main(["train", "--data", str(prepared), "--params", json.dumps(cfg), "--out", str(out),
                 "--teacher", str(student_ckpt), "--quiet"]) == 0
    log = (out / "log.csv").read_text().splitlines()
    assert "latent" in log[0] and len(log) == 2
    wrong = cfg | {"teacher": assistant | {"width": "4M"}}
    assert main(["train", "--data", str(prepared), "--params", json.dumps(wrong), "--out", str(tmp_path / "bad"),
                 "--teacher", str(student_ckpt), "--quiet"]) != 0
    assert f"--teacher {student_ckpt}: holds a squeezeunet model" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_an_external_cohort_is_planned_from_its_source():
    s = study({"data": {"external": {"source": "phantom"}}})
    assert s.external and s.external.generated and s.external.source() == f"{OUT}/raw/external/phantom"
    assert s.external.format == "rawdata" and s.external.source_files() == []
    assert s.runs.external_eval_files[0] == f"{OUT}/eval/external/teacher.csv"
    assert s.runs.external_eval_files[1:] == [f"{OUT}/eval/external/students/{r['name']}.csv" for r in s.runs.runs]
    none = study({"data": {"external": {"source": "none"}}})
    assert not none.external and none.runs.external_eval_files == []
    from hkd.config_checks import check_config

    with pytest.raises(ValueError, match="data.external.path: a folder cohort needs the folder"):
        check_config(study({"data": {"external": {"source": "folder"}}}).config)
    with pytest.raises(ValueError, match="data.external.source: 'phantom' generates the study's phantom"):
        check_config(study({"data": {"source": "synapse", "external": {"source": "phantom"}}}).config)
    real = study({"data": {"source": "synapse", "external": {"source": "auto"}}})  # the default's: phantom only
    assert not real.external and real.runs.external_eval_files == [] and study().external.generated
    folder = study({"data": {"external": {"source": "folder", "path": "elsewhere", "format": "nnunet"}}})
    assert folder.external.source() == "elsewhere" and folder.external.format == "nnunet"
