"""A dataset layout's file names are written once, beside its reader (``hkd/data/*_files.py``): its reader
matches them, the source registry names the phantom's files with them, a download writes them."""

from __future__ import annotations

import ast
import re

import pytest

from hkd.data import kits19_lits_files, nnunet_files, rawdata_files, sources
from hkd.data.readers import kits19_lits, rawdata

from helpers import REPO

# a layout's file names as code would spell them: KiTS19, LiTS, Synapse RawData, nnU-Net raw
SPELLED = re.compile(r"imaging\.nii|segmentation[.-]|volume-(?:N|\d|\{)|Training/(?:img|label)|(?:images|labels)Tr\b")


def _strings(path):
    """The string constants of a module that are not docstrings, with their lines."""
    tree = ast.parse(path.read_text())
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs]


def test_no_module_but_the_naming_ones_spells_a_layouts_file_names():
    spelled = [f"{path.relative_to(REPO)}:{line}: {text!r}" for path in sorted((REPO / "hkd").rglob("*.py"))
               if not path.name.endswith("_files.py") for line, text in _strings(path) if SPELLED.search(text)]
    assert not spelled, spelled


@pytest.mark.parametrize("layout", sources.phantom_layouts())
def test_the_phantoms_files_are_the_names_its_reader_matches(layout):
    """The registry's phantom names for a few case indices: the reader's patterns find the pair and give back
    the case id the registry says."""
    for index in (0, 7, 123):
        case_id, image, label = sources.phantom_files(layout, index)
        if layout == "synapse":
            folder, name = image.rsplit("/", 1)
            assert folder == rawdata_files.IMAGES and label.rsplit("/", 1)[0] == rawdata_files.LABELS
            number = rawdata._IMG_RE.match(name).group(1)
            assert rawdata._LABEL_RE.match(label.rsplit("/", 1)[1]).group(1) == number
            assert number.zfill(rawdata_files.DIGITS) == case_id
        elif layout in kits19_lits.LAYOUTS:
            reader = kits19_lits.LAYOUTS[layout]
            assert kits19_lits.pair_names([image, label], reader, "phantom") == {case_id: (image, label)}
        else:
            assert (image, label) == (nnunet_files.image_name(case_id), nnunet_files.label_name(case_id))


def test_the_kits19_download_writes_the_names_the_reader_pairs():
    from hkd.data.downloaders import kits19

    number = "00042"
    assert kits19.LABELS_URL.format(case=42).endswith("/" + kits19_lits_files.kits19_label(number))
    names = [kits19_lits_files.kits19_image(number), kits19_lits_files.kits19_label(number)]
    assert kits19_lits.pair_names(names, kits19_lits.KITS19, "download") == {number: tuple(names)}
