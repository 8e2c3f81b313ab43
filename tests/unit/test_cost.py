"""hkd cost: parameters, FLOPs, file size, latency and memory per model and runtime; the Dice-vs-cost figure."""

from __future__ import annotations


import pandas as pd
import pytest

from hkd.cli import main


def test_flops_are_flops_not_macs(one_thread):
    import torch

    from hkd.deploy.cost import flops

    conv = torch.nn.Conv2d(1, 4, 3, padding=1, bias=False)
    # 4 output channels x 9 weights x 32 x 32 positions multiply-adds, 2 FLOPs each
    assert flops(conv, 32) == 2 * 4 * 9 * 32 * 32


def test_paper_sizes_flops(one_thread):
    from hkd.deploy.cost import at_size, flops

    teacher = flops(at_size({"arch": "transunet", "num_classes": 9}, 224), 224) / 1e9
    student = flops(at_size({"arch": "squeezeunet", "width": "0.4M", "num_classes": 9}, 224), 224) / 1e9
    print(f"GFLOPs at 224: teacher {teacher:.2f}, 0.4M student {student:.2f}, ratio {teacher / student:.1f}")
    assert teacher == pytest.approx(57.1, abs=0.1) and student == pytest.approx(1.72, abs=0.01)


@pytest.mark.slow
@pytest.mark.budget(60)  # each runtime measured in a process of its own
def test_cost_table_and_its_figure(student_ckpt, prepared, tmp_path):
    summary = pd.DataFrame([{"method": "scratch", "params": 26893, "dice_mean": 0.4, "dice_std": 0.0},
                            {"method": "logits", "params": 26893, "dice_mean": 0.45, "dice_std": 0.0}])
    summary.to_csv(tmp_path / "summary.csv", index=False)
    out = tmp_path / "tables"
    assert main(["cost", "--models", f"0.25={student_ckpt}", "--data", str(prepared), "--runs", "20",
                 "--volumes", "1", "--out-csv", str(out / "cost.csv"), "--out-html", str(out / "cost.html")]) == 0
    table = pd.read_csv(out / "cost.csv")
    print(table.to_string())
    from hkd.deploy.cost import runtimes_to_measure

    assert list(zip(table["runtime"], table["precision"])) == runtimes_to_measure(onnx=True, int8=True)
    assert list(table["runtime"][:2]) == ["pytorch", "onnxruntime"]
    # the int8 row: the model hkd export --int8 starts from (int8 weights but for the decoder's and head's),
    # run in ONNX Runtime, its logits and Dice against PyTorch's in fp32
    int8 = table[table["precision"] == "int8"].iloc[0]
    onnx_fp32 = table[(table["runtime"] == "onnxruntime") & (table["precision"] == "fp32")].iloc[0]
    assert int8["runtime"] == "onnxruntime" and int8["file_mb"] < onnx_fp32["file_mb"]
    assert 1e-4 < int8["max_abs_logit_diff"] < 1 and 0.99 < int8["argmax_agreement"] <= 1
    fp32 = table[table["precision"] == "fp32"]  # every fp32 runtime computes what PyTorch computes
    assert (fp32["max_abs_logit_diff"] <= 1e-4).all() and (fp32["argmax_agreement"] >= 0.999).all()
    assert table["test_dice"].between(0, 1).all() and table["dice_change"].iloc[0] == 0.0
    assert (table["dice_change"] - (table["test_dice"] - table["test_dice"].iloc[0])).abs().max() < 1e-12
    assert (table["params"] == 26893).all() and (table["threads"] == 1).all() and (table["runs"] == 20).all()
    assert (table["size"] == 32).all() and (table["gflops_224"] > table["gflops"]).all()
    assert (table["latency_q25_ms"] <= table["latency_ms"]).all()
    assert (table["latency_ms"] <= table["latency_q75_ms"]).all()
    assert table["volume_s"].notna().all() and (table["peak_mb"] >= 0).all() and (table["file_mb"] > 0).all()
    assert "hkd-table" in (out / "cost.html").read_text()
    # the Dice-vs-latency figure is a catalog figure: drawn by hkd figures from the summary and this table
    assert main(["figures", "--data", str(prepared), "--runs", "[]", "--summary", str(tmp_path / "summary.csv"),
                 "--cost", str(out / "cost.csv"), "--out-dir", str(tmp_path / "figures")]) == 0
    assert (tmp_path / "figures" / "dice_vs_cost.png").stat().st_size > 10_000
    assert main(["cost", "--models", f"0.25={student_ckpt}", "--runs", "5", "--out-csv", str(out / "c.csv")]) == 1
