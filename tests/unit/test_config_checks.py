"""The configuration checks (hkd/config_checks.py) and the data-source registry (hkd/data/sources.py),
called directly: no workflow is parsed."""

from __future__ import annotations

import ast
import copy
import importlib
import json
import re
import shlex
import sys
import types
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from helpers import REPO, default_config, merge
from hkd.cli import build_parser, main
from hkd.config_checks import check_against_package, check_config, schema_error
from hkd.data import downloaders, readers, sources
from hkd.study.data_source import DataSource
from hkd.study.layout import Layout

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def full_config(patch: dict | None = None) -> dict:
    """The default config with ``patch`` merged in and the schema's defaults filled, as the workflow sees it."""
    cfg = merge(default_config(), copy.deepcopy(patch or {}))
    validate(cfg, str(SCHEMA), set_default=True)
    return cfg


def test_the_default_config_passes():
    cfg = full_config()
    assert check_config(cfg) is None and check_against_package(cfg) is None  # each raises on a bad key


@pytest.mark.parametrize("patch, message", [
    ({"data": {"split": {"ratios": [0.6, 0.3, 0.2]}}}, "config key data.split.ratios: [0.6, 0.3, 0.2] must sum to 1"),
    ({"data": {"hu_window": [275, -125]}}, "config key data.hu_window: upper bound -125 must exceed"),
    ({"data": {"label_map": {1: 9}}}, "config key data.label_map: class ids [9] have no name"),
    ({"data": {"source": "zip"}}, "config key data.path: required for data.source 'zip'"),
    ({"data": {"source": "folder"}}, "config key data.path: required for data.source 'folder'"),
    ({"data": {"source": "transunet"}}, "config key data.path: required for data.source 'transunet'"),
    ({"data": {"source": "lits"}}, "config key data.path: required for data.source 'lits' (the LiTS folder or zip"),
    ({"data": {"source": "kits19", "path": "/no/such/kits19"}}, "data.path: /no/such/kits19 does not exist"),
    ({"data": {"phantom": {"tumours": {}}}}, "config key data.phantom.tumours: the synapse layout"),
    ({"data": {"phantom": {"layout": "lits", "tumours": {"count": [3, 1]}}}}, "data.phantom.tumours.count: minimum 3"),
    ({"data": {"phantom": {"slices": [9, 4]}}}, "config key data.phantom.slices: minimum 9 exceeds maximum 4"),
    ({"data": {"split": {"preset": "file"}}}, "config key data.split.file: required when"),
    ({"teacher": {"cache": ["logits"]}, "students": {"lockstep": True}},
     "config keys students.lockstep and teacher.cache"),
    ({"teacher": {"cache": ["logits"]}, "students": {"train": {"augment": "transunet"}}}, "config key teacher.cache"),
])
def test_each_check_names_its_key(patch, message):
    with pytest.raises(ValueError, match=None) as info:
        check_config(full_config(patch))
    assert message in str(info.value)


@pytest.mark.parametrize("patch, message", [
    ({"students": {"methods": ["scratch", "telepathy"]}}, "config key students.methods: unknown method(s) ['telepathy']"),
    ({"distill": {"latent": {"strength": 1}}}, "config key distill.latent: unknown option(s) ['strength']"),
    ({"data": {"task": "tumour"}}, "data.classes: task 'tumour' needs the classes [background, tumour]"),
    ({"data": {"split": {"ratios": [0.5, 0.5, 0.0]}}}, "leave the 'test' part empty"),
])
def test_each_package_check_names_its_key(patch, message):
    cfg = full_config(patch)
    check_config(cfg)
    with pytest.raises(ValueError) as info:
        check_against_package(cfg)
    assert message in str(info.value)


def test_all_methods_is_the_registry_scratch_first():
    from hkd import distill

    cfg = full_config({"students": {"methods": "all"}})
    check_against_package(cfg)
    methods = cfg["students"]["methods"]
    assert methods[0] == "scratch" and sorted(methods) == sorted(distill.available())
    cfg = full_config()
    cfg["students"]["methods"] = "some"
    assert schema_error(cfg, SCHEMA).startswith("config key students.methods:")


def test_a_source_too_small_for_the_split_is_found_from_its_file_names(tmp_path):
    for i in (1, 2):
        for kind in ("img", "label"):
            (tmp_path / "Training" / kind).mkdir(parents=True, exist_ok=True)
            (tmp_path / "Training" / kind / f"{kind}{i:04d}.nii.gz").write_bytes(b"")
    cfg = full_config({"data": {"source": "folder", "path": str(tmp_path), "split": {"ratios": [0.8, 0.1, 0.1]}}})
    with pytest.raises(ValueError, match="config key data.split.ratios: 0.8/0.1/0.1 of 2 cases leave"):
        check_against_package(cfg)


def test_a_split_file_is_read_and_checked(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["1"], "val": [], "test": ["3"]}))
    with pytest.raises(ValueError, match="data.split.file: .*not a split file"):
        check_against_package(full_config({"data": {"split": {"preset": "file", "file": str(path)}}}))
    path.write_text(json.dumps({"train": ["1"], "val": ["2"], "test": ["3"]}))
    check_against_package(full_config({"data": {"split": {"preset": "file", "file": str(path)}}}))


def test_schema_errors_are_one_line_naming_the_key():
    assert schema_error(full_config(), SCHEMA) is None
    cfg = full_config()
    cfg["data"]["colour"] = "blue"
    assert schema_error(cfg, SCHEMA).startswith("config key data.colour: unknown key")
    cfg = full_config()
    cfg["data"]["image_size"] = -64
    assert schema_error(cfg, SCHEMA).startswith("config key data.image_size:")


# ------------------------------------------------------------------------------ the source registry

def _schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def test_the_registry_holds_exactly_the_schemas_sources_and_layouts():
    data = _schema()["properties"]["data"]["properties"]
    assert list(sources.SOURCES) == data["source"]["enum"]
    assert sources.phantom_layouts() == data["phantom"]["properties"]["layout"]["enum"]
    assert sources.phantom_layouts()[0] == data["phantom"]["properties"]["layout"]["default"]
    formats = {s.format for s in sources.SOURCES.values() if s.format}
    assert formats == set(sources.FORMATS)
    for source in sources.SOURCES.values():
        assert source.path in ("none", "required", "optional") and source.packed in ("zip", "folder", "either")
        assert (source.path == "optional") == (source.download is not None and source.path != "none")


def test_every_format_has_a_reader_with_the_interface():
    for fmt, module in sources.FORMATS.items():
        reader = importlib.import_module(module)
        assert all(callable(getattr(reader, f, None)) for f in ("list_cases", "iter_cases", "count_cases")), fmt
    with pytest.raises(ValueError, match="unknown format 'dicom'"):
        readers.reader("dicom")


def test_every_downloadable_source_has_its_downloader(tmp_path):
    """`hkd download --source NAME` runs hkd/data/downloaders/NAME.py, with the options the registry builds
    from the default config."""
    data = full_config()["data"]
    parser = build_parser(["download"])
    for name in sources.downloadable():
        module = downloaders.downloader(name)
        assert callable(module.add_arguments) and callable(module.run), name
        what = sources.download_arguments({**data, "source": name})
        args = parser.parse_args(["download", *shlex.split(what), "--out", str(tmp_path)])
        assert args.source == name and args.func.__name__ == "cmd_download", what
    with pytest.raises(ValueError, match="--source zip: not a downloadable source"):
        downloaders.downloader("zip")


def test_the_report_describes_each_source_by_its_registry_entry():
    data = full_config()["data"]
    assert sources.describe(data) == "phantom: 50 generated abdominal CT cases (seed 0)"
    tumours = merge(data, {"phantom": {"layout": "kits19", "tumours": {}}})
    assert sources.describe(tumours) == "phantom: 50 generated abdominal CT cases (seed 0), kits19 layout, with tumours"
    assert sources.describe({**data, "source": "synapse"}) == "synapse: syn3379050"
    assert sources.describe({**data, "source": "kits19"}) == "kits19: downloaded, cases 0-209"
    assert sources.describe({**data, "source": "kits19", "path": "/data/kits19"}) == "kits19: /data/kits19"
    assert sources.describe({**data, "source": "lits", "path": "/data/lits"}) == "lits: /data/lits"
    assert sources.download_arguments({**data, "source": "kits19", "path": "/data/kits19"}) == ""
    assert sources.download_arguments(data) == ""


def _fake_source(monkeypatch, tmp_path) -> str:
    """Register a downloadable source 'tapes' (RawData zips fetched from a folder) with its downloader module,
    as a new source would be added: one registry entry and one module."""
    entry = sources.Source(
        "tapes", "rawdata", "optional", "zip", "a RawData.zip copied from a tape folder",
        download=sources.Download(lambda d: f"--source tapes --tape {d['path_on_tape']}",
                                  lambda d: f"tapes: {d['path_on_tape']}"))
    monkeypatch.setitem(sources.SOURCES, "tapes", entry)
    module = types.ModuleType("hkd.data.downloaders.tapes")

    def add_arguments(group):
        group.add_argument("--tape", default=None)

    def run(args):
        Path(args.out).write_bytes(Path(args.tape).read_bytes())
        return args.tape

    module.add_arguments, module.run = add_arguments, run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return "tapes"


def test_a_new_downloadable_source_is_one_registry_entry_and_its_module(monkeypatch, tmp_path, capsys):
    name = _fake_source(monkeypatch, tmp_path)
    tape = tmp_path / "tape.zip"
    tape.write_bytes(b"zip bytes")
    data = {**full_config()["data"], "source": name, "path_on_tape": str(tape)}
    # the CLI's choices, the workflow's download options, its target and the report's line follow the entry
    assert name in sources.downloadable()
    assert sources.downloads(data) and sources.packed(data) == "zip"
    assert DataSource(data, Layout("out")).downloaded == f"out/raw/{name}/RawData.zip"
    assert sources.describe(data) == f"tapes: {tape}"
    out = tmp_path / "RawData.zip"
    assert main(["download", *shlex.split(sources.download_arguments(data)), "--out", str(out)]) == 0
    assert out.read_bytes() == b"zip bytes"
    monkeypatch.delitem(sources.SOURCES, name)
    assert name not in sources.downloadable()
    with pytest.raises(SystemExit):
        main(["download", "--source", name, "--out", str(out)])
    assert f"invalid choice: '{name}'" in capsys.readouterr().err


# Where a source may be named in the code: its registry entry, its own reader or downloader, and the phantom
# (which imitates the KiTS19 and Synapse layouts: their labels, voxel order and default).
SOURCE_MODULES = {
    # hkd/extras.py names the pip extra hkd[synapse] (the package the source needs), not the source
    "synapse": {"hkd/data/sources.py", "hkd/data/downloaders/synapse.py", "hkd/data/phantom/writers.py", "hkd/extras.py"},
    "kits19": {"hkd/data/sources.py", "hkd/data/downloaders/kits19.py", "hkd/data/readers/kits19_lits.py",
               "hkd/data/phantom/writers.py"},
}


def test_no_other_module_names_a_source_by_hand():
    """The CLI, the workflow's rules and the config checks take sources from the registry: no other file
    of the package or the workflow holds a source's name as a string."""
    found = {name: set() for name in SOURCE_MODULES}
    for path in sorted((REPO / "hkd").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in found:
                found[node.value].add(str(path.relative_to(REPO)))
    rules = sorted((REPO / "workflow").rglob("*.smk")) + [REPO / "Snakefile"]
    for path in rules:
        for name, files in found.items():
            if re.search(rf"[\"']{name}[\"']", path.read_text()):
                files.add(str(path.relative_to(REPO)))
    for name, files in found.items():
        assert files <= SOURCE_MODULES[name], (name, sorted(files - SOURCE_MODULES[name]))
        assert "hkd/data/sources.py" in files, name  # the check sees the registry's own entry


def test_what_each_source_is_follows_its_path(tmp_path):
    def data(source, path=None, layout="synapse"):
        return {"source": source, "path": path, "phantom": {"layout": layout}}

    assert sources.case_format(data("phantom", layout="lits")) == "lits"
    assert sources.case_format(data("phantom")) == "rawdata"
    assert sources.case_format(data("zip", "x.zip")) == "rawdata"
    assert sources.downloads(data("kits19")) and not sources.downloads(data("kits19", str(tmp_path)))
    assert sources.downloads(data("synapse")) and not sources.downloads(data("phantom"))
    archive = tmp_path / "lits.zip"
    archive.write_bytes(b"")
    assert sources.packed(data("lits", str(archive))) == "zip"
    assert sources.packed(data("lits", str(tmp_path))) == "folder"
    assert sources.user_folder(data("lits", str(tmp_path))) == str(tmp_path)
    assert sources.user_folder(data("lits", str(archive))) is None
    assert sources.user_folder(data("phantom")) is None
    with pytest.raises(ValueError, match="unknown source 'tape'"):
        sources.source_of(data("tape"))
