"""Configuration mistakes fail the dry run (``snakemake -n`` on the real workflow), in a short message naming
the config key.
"""

from __future__ import annotations

import pytest
from conftest import write_rawdata
from patched_workflow import snakemake_patched


@pytest.mark.slow
@pytest.mark.parametrize("patch, message", [
    ({"teacher": {"cache": ["logits", "telepathy"]}, "students": {"train": {"augment": "none"}}},
     "config key teacher.cache: unknown method(s) ['telepathy']"),
    ({"distill": {"telepathy": {}}}, "config key distill: unknown method(s) ['telepathy']"),
    ({"distill": {"logits": {"temprature": 2}}}, "config key distill.logits: unknown option(s) ['temprature']"),
    ({"data": {"split": {"ratios": [0.8, 0.0, 0.2]}}}, "config key data.split.ratios: 0.8/0/0.2 leave the 'val'"),
    ({"data": {"split": {"preset": "file", "file": "/no/such/split.json"}}},
     "config key data.split.file: /no/such/split.json does not exist"),
])
def test_config_mistakes_fail_the_dry_run(patch, message, tmp_path):
    result = snakemake_patched(tmp_path, patch, "-n")
    assert result.returncode != 0 and message in result.stderr + result.stdout, result.stderr[-2000:]


@pytest.mark.slow
def test_a_two_case_folder_fails_the_dry_run_naming_ratios_and_count(tmp_path):
    raw = write_rawdata(tmp_path / "RawData", n=2, shape=(16, 16, 4))
    result = snakemake_patched(tmp_path, {"data": {"source": "folder", "path": str(raw)}}, "-n")
    assert result.returncode != 0
    assert "config key data.split.ratios: 0.6/0.2/0.2 of 2 cases leave the 'val' part empty" in (
        result.stdout + result.stderr)


@pytest.mark.slow
def test_a_schema_violation_is_short_and_names_key_and_rule(tmp_path):
    result = snakemake_patched(tmp_path, {}, "-n", "--config", "bogus=1")
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "config key bogus: unknown key" in text
    assert len(text.splitlines()) < 10, text
    result = snakemake_patched(tmp_path, {"data": {"image_size": 20}}, "-n")
    text = result.stdout + result.stderr
    assert "config key data.image_size: 20 is not a multiple of 16 (schema rule 'multipleOf')" in text
    assert len(text.splitlines()) < 10, text


@pytest.mark.slow
def test_report_slices_as_case_and_slice_pairs_are_checked_by_the_schema(tmp_path):
    result = snakemake_patched(tmp_path, {"report": {"slices": [["0004", 2]]}}, "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    result = snakemake_patched(tmp_path, {"report": {"slices": [["0004", "two"]]}}, "-n")
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "config key report.slices" in text and "AttributeError" not in text, text


@pytest.mark.slow
@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_out_fails_the_dry_run(out, tmp_path):
    result = snakemake_patched(tmp_path, {"out": out}, "-n")
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "config key out: " in text and "/data/split.json" not in text, text[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("patch, message", [
    ({"students": {"methods": ["scratch", "logits"]}, "distill": {"logits": {"temperature": -1}}},
     "config key distill.logits.temperature: distillation method 'logits': option 'temperature' must be positive, "
     "got -1"),
    ({"students": {"widths": ["0"]}}, "config key students.widths ('0'): SqueezeUNet width multiplier must be "
                                      "positive"),
    ({"teacher": {"model": {"arch": "transunet", "hidden_size": 100, "num_heads": 3}}},
     "config key teacher.model: hidden size 100 is not divisible by 3 heads"),
    ({"train": {"schedule": "cosine", "lr": 0.001, "min_lr": 0.01}},
     "config key train or teacher.train: training config: invalid value for min_lr"),
])
def test_bad_method_and_model_options_fail_the_dry_run(patch, message, tmp_path):
    result = snakemake_patched(tmp_path, patch, "-n")
    text = result.stdout + result.stderr
    assert result.returncode != 0 and message in text, text[-2000:]
