"""The configuration checks (hkd/config_checks.py) and the data-source registry (hkd/data/sources.py),
called directly: no workflow is parsed."""

from __future__ import annotations

import copy
import importlib
import json

import pytest
import yaml
from snakemake.utils import validate

from helpers import REPO, default_config, merge
from hkd.config_checks import check_against_package, check_config, schema_error
from hkd.data import sources

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
    assert set(sources.PHANTOM_FORMATS) == set(data["phantom"]["properties"]["layout"]["enum"])
    formats = {s.format for s in sources.SOURCES.values() if s.format} | set(sources.PHANTOM_FORMATS.values())
    assert formats == set(sources.FORMATS)
    for source in sources.SOURCES.values():
        assert source.path in ("none", "required", "optional") and source.packed in ("zip", "folder", "either")
        assert source.download == (source.name in ("synapse", "kits19"))
        assert (source.path == "optional") == (source.download and source.path != "none")


def test_every_format_has_a_reader_with_the_interface():
    for fmt, module in sources.FORMATS.items():
        reader = importlib.import_module(module)
        assert all(callable(getattr(reader, f, None)) for f in ("list_cases", "iter_cases", "count_cases")), fmt
    with pytest.raises(ValueError, match="unknown format 'dicom'"):
        sources.reader("dicom")


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
