"""Model specs, method options and config files fail at the dry run, each in one line naming the config key
or file, before any job runs (mistakes that would otherwise surface only after the teacher had trained).

Most tests call the checks the dry run runs (``check_study_runs``, ``check_methods``, the config file
reader) directly; the ``slow`` ones run ``snakemake -n`` on a copy of the workflow.
"""

from __future__ import annotations

import copy
import sys

import pytest
import yaml
from snakemake.utils import validate

import helpers
from helpers import REPO, TINY_TEACHER, default_config, merge
from cli_errors import one_line_error, run_cli

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
SIZE, CLASSES = 32, 9

# A user's networks, importable as ``usernets`` (arch: module).
USER_NETS = '''
import torch.nn.functional as F
from torch import nn


class Half(nn.Module):
    """Logits at half the input's size."""

    def __init__(self, classes=9):
        super().__init__()
        self.head = nn.Conv2d(1, classes, 3, stride=2, padding=1)

    def forward(self, x):
        return self.head(x)


class SharedReLU(nn.Module):
    """One ReLU module applied twice."""

    def __init__(self, classes=9):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=4, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        z = self.act(self.b(self.act(self.a(x))))
        return self.head(F.interpolate(z, size=x.shape[-2:]))


class NeedsKey(nn.Module):
    def __init__(self, classes=9, table=None):
        super().__init__()
        self.head = nn.Conv2d(1, classes, 1)
        (table or {})["depth"]

    def forward(self, x):
        return self.head(x)
'''
BROKEN = {"broken_syntax": "def f(:\n    pass\n", "broken_name": "from torch import nn\nLayer = nn.Conv2\n",
          "broken_assert": "assert False, 'this network needs CUDA'\n",
          "broken_key": "import os\nROOT = os.environ['HKD_TEST_NO_SUCH_VARIABLE']\n"}


@pytest.fixture(scope="module")
def user_modules(tmp_path_factory):
    folder = tmp_path_factory.mktemp("usermods")
    (folder / "usernets.py").write_text(USER_NETS)
    for name, text in BROKEN.items():
        (folder / f"{name}.py").write_text(text)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("usernets", None)


def scratch(model: dict, **recipe) -> dict:
    return {"model": model, "method": "scratch", "teacher": None, "epochs": 1, "batch_size": 8, "device": "cpu",
            **recipe}


def dry_run_line(model: dict | None = None, cfg: dict | None = None, key: str = "students.models.net") -> str:
    """The error of the dry run's check of one run (``hkd.train.preflight.check_study_runs``), checked to be one line."""
    from hkd.train.preflight import check_study_runs

    with pytest.raises(ValueError) as err:
        check_study_runs([("students", key, cfg or scratch(model))], SIZE, CLASSES)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


# --- models: built once at the dry run, their output and features checked -----------------------------------

def test_logits_smaller_than_the_input_fail_the_dry_run(user_modules):
    line = dry_run_line({"arch": "module", "name": "usernets:Half"})
    assert line.startswith("config key students.models.net: model (module usernets:Half): its logits are 16x16 on "
                           "a 32x32 input"), line


def test_a_feature_on_a_module_that_runs_twice_fails_the_dry_run(user_modules):
    line = dry_run_line({"arch": "module", "name": "usernets:SharedReLU", "features": {"bottleneck": "act"}})
    assert line.startswith("config key students.models.net:") and \
        "feature 'bottleneck' names module 'act', which runs more than once in one forward pass" in line, line


@pytest.mark.parametrize("module, raised", [("broken_syntax", "SyntaxError: "),
                                            ("broken_name", "AttributeError: module 'torch.nn' has no attribute"),
                                            ("broken_assert", "AssertionError: this network needs CUDA"),
                                            ("broken_key", "KeyError: HKD_TEST_NO_SUCH_VARIABLE")])
def test_a_user_module_that_fails_at_import_is_one_line_naming_the_key(module, raised, user_modules):
    line = dry_run_line({"arch": "module", "name": f"{module}:Net"})
    assert line.startswith(f"config key students.models.net: arch 'module': importing '{module}' raised {raised}"), line


def test_a_user_network_that_fails_when_built_is_one_line_naming_the_key(user_modules):
    line = dry_run_line({"arch": "module", "name": "usernets:NeedsKey", "args": {"table": {"width": 2}}})
    assert line == ("config key students.models.net: module usernets:NeedsKey: building it with args "
                    "{'table': {'width': 2}} raised KeyError: depth"), line


def test_a_text_for_a_number_argument_names_the_argument(user_modules):
    line = dry_run_line({"arch": "module", "name": "usernets:NeedsKey", "args": {"classes": "nine"}})
    assert line == ("config key students.models.net: module usernets:NeedsKey: args.classes is 'nine', a text, but "
                    "NeedsKey's parameter classes takes a number (its default: 9)"), line


def test_a_whole_number_written_as_a_decimal_names_the_key():
    from hkd.config_checks import check_whole_numbers

    cfg = merge(default_config(), {"data": {"image_size": 48.0}})
    validate(cfg, str(SCHEMA), set_default=True)  # JSON Schema takes 48.0 for an integer
    with pytest.raises(ValueError, match=r"^config key data.image_size: 48.0 must be written as a whole number "
                                         r"\(48\), without a decimal point$"):
        check_whole_numbers(cfg, SCHEMA)
    line = dry_run_line(cfg=scratch({"arch": "squeezeunet", "width": 0.25}, epochs=2.0))
    assert line == "config key train or students.train: training config: epochs must be a whole number, got 2.0", line


# --- method options: type and range from their defaults, and batch sizes ---------------------------------------

@pytest.mark.parametrize("method, option, value, problem", [
    ("dkd", "alpha", -1, "must be at least 0 (a weight), got -1"),
    ("cka", "weight", -7, "must be at least 0 (a weight), got -7"),
    ("relrep", "weight", float("inf"), "must be a finite number, got inf"),
    ("dkd", "alpha", "abc", "must be a number, got 'abc'"),
    ("dist", "temperature", 0, "must be positive, got 0"),
    ("logits", "alpha", 1.0, "must be in [0, 1), got 1.0"),
    ("relrep", "num_anchors", 2.5, "must be a whole number of at least 1, got 2.5"),
    ("infoflow", "pool", "max", "must be one of flatten|mean, got 'max'"),
    ("hlfd", "beta", -0.5, "must be at least 0 (a weight), got -0.5"),
])
def test_method_options_fail_the_dry_run_naming_the_option(method, option, value, problem):
    from hkd.config_checks import check_methods

    cfg = merge(default_config(), {"distill": {method: {option: value}}})
    with pytest.raises(ValueError) as err:
        check_methods(cfg)
    assert str(err.value) == (f"config key distill.{method}.{option}: distillation method '{method}': option "
                              f"'{option}' {problem}"), err.value
    run = {**scratch({"arch": "squeezeunet", "width": 0.25}), "method": method, "teacher": TINY_TEACHER,
           "method_options": {option: value}}
    line = dry_run_line(cfg=run)
    assert line.startswith(f"config key distill.{method}.{option}: "), line


def test_a_batch_of_one_image_fails_the_dry_run_for_a_method_relating_a_batch():
    run = {**scratch({"arch": "squeezeunet", "width": 0.25}, batch_size=1), "method": "infoflow",
           "teacher": TINY_TEACHER}
    line = dry_run_line(cfg=run)
    assert line == ("config key train.batch_size or students.train.batch_size: distillation method 'infoflow' relates "
                    "the images of a batch: with batch_size 1 its term is 0 at every step; use a batch_size of at "
                    "least 2"), line


# --- config files -------------------------------------------------------------------------------------------

def test_a_key_given_twice_in_a_params_file_names_key_file_and_lines(prepared, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("model:\n  arch: squeezeunet\n  width: 0.25\nepochs: 1\nepochs: 2\n")
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", params, "--out", tmp_path / "o", "--quiet")
    line = one_line_error(err)
    assert code == 1 and line.endswith(f"--params: {params}: key 'epochs' is given twice in one mapping (lines 4 "
                                       "and 5); a YAML reader would keep only the last, so remove one"), line
    assert not (tmp_path / "o").exists()


def test_a_tab_in_a_params_file_names_file_line_and_column(prepared, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("model:\n  arch: squeezeunet\n\twidth: 0.25\n")
    code, err = run_cli(capsys, "train", "--data", prepared, "--params", params, "--out", tmp_path / "o", "--quiet")
    line = one_line_error(err)
    assert code == 1 and f"--params: {params}: not valid YAML at line 3, column 1:" in line, line
    assert "(a tab: YAML indents with spaces only)" in line, line


def test_a_model_spec_is_replaced_whole_by_a_later_config_file(tmp_path):
    from hkd.config_checks import command_line_overrides

    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(yaml.safe_dump({"students": {"models": {"net": {"arch": "module", "name": "usernets:Half",
                                                                      "args": {"classes": 9},
                                                                      "features": {"bottleneck": "head"}}}},
                                      "teacher": {"model": TINY_TEACHER}}))
    second.write_text(yaml.safe_dump({"students": {"models": {"net": {"arch": "squeezeunet", "width": 0.25}}},
                                      "teacher": {"model": {"arch": "transunet", "hidden_size": 64}}}))
    merged = command_line_overrides([first, second], {"students": {"seeds": [1]}})
    assert merged["students"] == {"models": {"net": {"arch": "squeezeunet", "width": 0.25}}, "seeds": [1]}
    assert merged["teacher"] == {"model": {"arch": "transunet", "hidden_size": 64}}


# --- the same through snakemake -n ------------------------------------------------------------------------------

TINY = {"data": {"phantom": {"cases": 3, "size": 32, "slices": [4, 5]}, "image_size": 32},
        "teacher": {"model": TINY_TEACHER}, "students": {"methods": ["scratch"], "widths": ["0.25"]}}


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    return helpers.copy_tracked_files(tmp_path_factory.mktemp("workflow"))


def dry_run(root, tmp_path, *configs: dict):
    """``snakemake -n`` on the copy ``root`` with the tiny study, then each of ``configs`` as a --configfile."""
    files = []
    for i, cfg in enumerate([merge(copy.deepcopy(TINY), {"out": str(tmp_path / "out")}), *configs]):
        files.append(tmp_path / f"c{i}.yaml")
        files[-1].write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    result = helpers.snakemake(root, "-n", "--configfile", *map(str, files))
    return result, result.stdout + result.stderr


@pytest.mark.slow
def test_the_dry_run_takes_a_model_spec_whole_from_the_last_config_file(workflow_copy, tmp_path):
    net = {"arch": "module", "name": "usernets:Half", "args": {"classes": 9}, "features": {"bottleneck": "head"}}
    result, text = dry_run(workflow_copy, tmp_path, {"students": {"models": {"net": net}}},
                           {"students": {"models": {"net": {"arch": "squeezeunet", "width": 0.25}}}})
    assert result.returncode == 0, text[-3000:]


@pytest.mark.slow
def test_the_dry_run_names_a_key_given_twice_and_a_method_option(workflow_copy, tmp_path):
    dup = "students:\n  seeds: [0]\n  seeds: [1]\n"
    result, text = dry_run(workflow_copy, tmp_path, dup)
    assert result.returncode != 0 and f"{tmp_path / 'c1.yaml'}: key 'seeds' is given twice in one mapping (lines 2 " \
        "and 3)" in text, text[-3000:]
    result, text = dry_run(workflow_copy, tmp_path, {"students": {"methods": ["scratch", "dkd"]},
                                                     "distill": {"dkd": {"alpha": -1}}})
    assert result.returncode != 0 and "config key distill.dkd.alpha: distillation method 'dkd': option 'alpha' must " \
        "be at least 0 (a weight), got -1" in text and "Traceback" not in text, text[-3000:]


@pytest.mark.slow
def test_the_dry_run_names_file_and_line_of_a_tab_in_config_yaml(workflow_copy, tmp_path):
    config = workflow_copy / "config.yaml"
    before = config.read_text()
    lines = before.splitlines(keepends=True)
    indented = next(i for i, line in enumerate(lines) if line.startswith("  ") and ":" in line)
    config.write_text("".join(lines[:indented]) + "\t" + lines[indented].lstrip(" ") + "".join(lines[indented + 1:]))
    try:
        result, text = dry_run(workflow_copy, tmp_path)
    finally:
        config.write_text(before)
    assert result.returncode != 0 and f"config.yaml: not valid YAML at line {indented + 1}, column 1" in text, \
        text[-3000:]
