"""``hkd cost``: what each trained model costs to run, beside what it scores.

Per model: trainable parameters; FLOPs of one slice (``torch.utils.flop_counter``: convolutions and
matrix products, 2 FLOPs per multiply-add; FLOPs, not MACs) at the study's slice size and at 224 px; the
size of its weights (the network's state dict alone, as ``torch.save`` writes it) and of its ONNX file;
and per runtime and precision (PyTorch eager; ONNX Runtime; with the ``openvino`` extra, OpenVINO in fp32
and in bf16 where the CPU has it; with prepared data, ONNX Runtime on the int8 model ``hkd export --int8``
starts from, calibrated on its training slices), measured in a fresh process each on the CPU with a stated
number of threads: latency of one slice at batch 1 (after warm-up runs; median and quartiles over ``runs`` timed
runs), seconds per test volume (evaluation's path: resize, network, nearest neighbour back), peak memory
(the growth of the process's peak resident set, reset once the runtime is imported, while it loads the
model and runs slices at batch 1: the weights and the activations of one slice), and what it changes
against PyTorch in fp32: the largest logit difference and the arg-max agreement on test slices, and the
mean test Dice on the timed volumes (an fp32 runtime must match within :data:`LOGIT_TOLERANCE`).
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("hkd")

RUNTIMES = ("pytorch", "onnxruntime", "openvino")
LOGIT_TOLERANCE = 1e-4  # an fp32 runtime's largest logit difference from PyTorch's (as hkd export checks)


def flops(network: torch.nn.Module, size: int) -> int:
    """FLOPs (not MACs) of one forward pass of a (1, 1, size, size) slice."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        network(torch.zeros(1, 1, size, size))
    return int(counter.get_total_flops())


def at_size(spec: dict, size: int) -> torch.nn.Module:
    """The network of ``spec`` built for ``size`` px slices (weights random: FLOPs do not depend on them)."""
    from hkd.models import build_model

    return build_model({**spec, "img_size": size} if spec.get("arch") == "transunet" else spec).eval()


def weights_bytes(network: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(network.state_dict(), buf)
    return buf.getbuffer().nbytes


def status_mb(key: str) -> float | None:
    """A memory figure of this process's /proc/self/status in MB (``VmRSS``; ``VmHWM``: its own peak, which
    ``ru_maxrss`` is not after a fork and exec); None where there is no such file."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def _reset_peak() -> float:
    """Reset the process's peak resident set to its current size (Linux: /proc/self/clear_refs); returns the
    current size in MB, the baseline of :func:`_peak_growth_mb`."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return status_mb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_growth_mb(base: float) -> float:
    peak = status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return max(peak - base, 0.0)


def _measure(kind: str, path: str, size: int, threads: int, runs: int, volumes: list, precision: str = "fp32",
             check: np.ndarray | None = None) -> dict:
    """In a fresh process: latency per slice, seconds per volume and peak memory of one runtime, its logits on
    the ``check`` slices and its label maps of the volumes."""
    torch.set_num_threads(threads)
    from hkd.infer import runtime
    from hkd.evaluate.volume import predict_volume
    from hkd.models import build_model

    if kind == "onnxruntime":
        import onnxruntime  # noqa: F401 (imported before the baseline)
    if kind == "openvino":
        from hkd import extras

        extras.require("openvino", "hkd cost's OpenVINO rows")
    base = _reset_peak()  # everything imported: what follows is the model's weights and its activations
    if kind == "pytorch":
        state = torch.load(path, map_location="cpu", weights_only=True)
        network = build_model(json.loads(state["spec"])).eval()
        network.load_state_dict(state["model"])
        del state
        run = runtime.torch_runner(network, precision=precision)
    elif kind == "openvino":
        run = runtime.openvino_runner(Path(path), threads, precision)
    else:
        run = runtime.ort_runner(runtime.ort_session(Path(path), threads))
    x = np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32)
    out = {"latency": runtime.latency(run, x, runs)}
    out["peak_mb"] = _peak_growth_mb(base)
    if check is not None:
        out["logits"] = run(check)
    if volumes:
        seconds, out["labels"] = [], []
        for volume in volumes:
            t0 = time.perf_counter()
            out["labels"].append(predict_volume(run, volume["image"], size, volume["scale"], batch_size=1))
            seconds.append(time.perf_counter() - t0)
        out["volume_s"] = float(np.mean(seconds))
        out["volume_slices"] = float(np.mean([len(v["image"]) for v in volumes]))
    return out


def measure_runtime(kind: str, path: Path, size: int, threads: int, runs: int, volumes: list,
                    precision: str = "fp32", check: np.ndarray | None = None) -> dict:
    """:func:`_measure` in a spawned process, so that its memory and threads are its own."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_measure, (kind, str(path), size, threads, runs, volumes, precision, check))


def _mean_dice(volumes: list, labels: list, classes: dict) -> float:
    """Mean Dice over the organs and volumes of predicted ``labels`` against the volumes' ground truth (every
    organ of every volume, empty masks by TransUNet's rule, as the study's tables count them)."""
    from hkd.evaluate.metrics import case_metrics

    return float(np.mean([row["dice"] for volume, pred in zip(volumes, labels)
                          for row in case_metrics(pred, volume["label"], volume["spacing"], classes)]))


def _test_volumes(prepared: Path | None, limit: int) -> tuple[list, dict]:
    """Up to ``limit`` test volumes (image, label, spacing, scale) and the classes scored on them."""
    if prepared is None:
        return [], {}
    from hkd.data.dataset import load_volume, read_meta

    meta = read_meta(prepared)
    scale = tuple(meta.get("scale", (0.0, 1.0)))
    volumes = []
    for case in list(meta["split"].get("test") or [])[:limit]:
        image, label, spacing = load_volume(prepared, case)
        volumes.append({"image": image, "label": label, "spacing": spacing, "scale": scale})
    return volumes, {i: name for i, name in enumerate(meta["classes"]) if i > 0}


def _check_slices(volumes: list, size: int, n: int = 16) -> np.ndarray:
    """The slices every runtime's logits are compared on: up to ``n`` test slices, else seeded random ones."""
    from hkd.infer.grid import model_slices

    if not volumes:
        return np.random.default_rng(0).random((4, 1, size, size), dtype=np.float32)
    slices = np.concatenate([model_slices(v["image"], size, v["scale"]) for v in volumes])
    return slices[np.linspace(0, len(slices) - 1, min(n, len(slices))).round().astype(int)]


def runtimes_to_measure(onnx: bool, int8: bool = False) -> list[tuple[str, str]]:
    """(runtime, precision) pairs ``hkd cost`` measures here: PyTorch, and with ONNX, ONNX Runtime and (the
    openvino extra installed) OpenVINO in fp32 and, where the CPU has bf16 arithmetic, in bf16; with ``int8``,
    ONNX Runtime on the int8 model last."""
    from hkd import extras
    from hkd.infer.runtime import openvino_bf16

    pairs = [("pytorch", "fp32")]
    if onnx:
        pairs.append(("onnxruntime", "fp32"))
        if extras.installed("openvino"):
            pairs.append(("openvino", "fp32"))
            if openvino_bf16():
                pairs.append(("openvino", "bf16"))
        if int8:
            pairs.append(("onnxruntime", "int8"))
    return pairs


def model_cost(name: str, network: torch.nn.Module, spec: dict, size: int, *, threads: int = 1, runs: int = 20,
               prepared: Path | None = None, volumes: int = 2, onnx: bool = True) -> list[dict]:
    """One row per runtime for the network ``name`` (see the module docstring)."""
    from hkd.deploy.export import CALIBRATION_SLICES, calibration_slices, int8_as_designed, to_onnx
    from hkd.models import count_parameters

    network = network.eval()
    int8 = onnx and prepared is not None  # its training slices calibrate the int8 model
    gflops = flops(network, size) / 1e9
    common = {"model": name, "params": count_parameters(network), "size": size, "gflops": gflops,
              "gflops_224": gflops if size == 224 else flops(at_size(spec, 224), 224) / 1e9, "threads": threads}
    vols, classes = _test_volumes(prepared, volumes)
    check = _check_slices(vols, size)
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "model.pt"
        torch.save({"spec": json.dumps(spec), "model": network.state_dict()}, ckpt)
        files = {"pytorch": (ckpt, weights_bytes(network))}
        if onnx:
            import onnx as onnx_lib

            proto, _ = to_onnx(network, size, spec)
            path = Path(tmp) / "model.onnx"
            onnx_lib.save(proto, path)
            files["onnxruntime"] = files["openvino"] = (path, os.path.getsize(path))
            if int8:
                path = Path(tmp) / "model-int8.onnx"
                onnx_lib.save(int8_as_designed(proto, spec, calibration_slices(prepared, CALIBRATION_SLICES)), path)
                files["onnxruntime", "int8"] = (path, os.path.getsize(path))
        for kind, precision in runtimes_to_measure(onnx, int8):
            path, nbytes = files.get((kind, precision)) or files[kind]
            m = measure_runtime(kind, path, size, threads, runs, vols, precision, check)
            lat = m["latency"]
            reference = reference or m  # PyTorch in fp32, measured first
            diff = float(np.abs(m["logits"] - reference["logits"]).max())
            dice = _mean_dice(vols, m["labels"], classes) if vols else None
            change = None if dice is None else dice - rows[0]["test_dice"] if rows else 0.0
            rows.append({**common, "runtime": kind, "precision": precision, "file_mb": nbytes / 2**20,
                         "latency_ms": lat["median_ms"], "latency_q25_ms": lat["q25_ms"],
                         "latency_q75_ms": lat["q75_ms"], "runs": lat["runs"],
                         "volume_s": m.get("volume_s"), "volume_slices": m.get("volume_slices"),
                         "peak_mb": m["peak_mb"], "max_abs_logit_diff": diff,
                         "argmax_agreement": float((m["logits"].argmax(1) == reference["logits"].argmax(1)).mean()),
                         "test_dice": dice, "dice_change": change})
            log.info("%s %s %s: %.2f ms per slice (median of %d, %d thread(s))", name, kind, precision,
                     lat["median_ms"], lat["runs"], threads)
            if precision == "fp32" and diff > LOGIT_TOLERANCE:
                log.warning("%s %s: logits differ from PyTorch's by %.3g (more than %g) in fp32", name, kind, diff,
                            LOGIT_TOLERANCE)
    return rows


def checkpoint_cost(name: str, checkpoint: Path, **options) -> list[dict]:
    """:func:`model_cost` of a checkpoint's network at its training slice size."""
    from hkd.infer.runtime import load_checkpoint

    model = load_checkpoint(checkpoint)
    rows = model_cost(name, model.network, model.spec, int(model.preprocessing["image_size"]), **options)
    return [{**r, "checkpoint_mb": checkpoint.stat().st_size / 2**20} for r in rows]


def ratio(rows: list[dict], a: str, b: str, precision: str = "fp32") -> float | None:
    """How many times faster model ``b`` runs than ``a``, each in its fastest runtime at ``precision``."""
    fastest = {}
    for r in rows:
        if r.get("precision", "fp32") == precision:
            fastest[r["model"]] = min(fastest.get(r["model"], float("inf")), r["latency_ms"])
    return fastest[a] / fastest[b] if a in fastest and b in fastest else None


def cost_display(table):
    """The cost table as the report shows it: one row per model and runtime, latency as median [quartiles]."""
    out = table[["model", "runtime", "precision", "params", "gflops", "gflops_224", "file_mb", "threads"]].copy()
    out.insert(2, "slice px", table["size"])
    out["latency ms (median [q25, q75])"] = [f"{m:.2f} [{a:.2f}, {b:.2f}]" for m, a, b in
                                             zip(table["latency_ms"], table["latency_q25_ms"], table["latency_q75_ms"])]
    out["runs"] = table["runs"]
    if table["volume_s"].notna().any():
        out["s per test volume"] = table["volume_s"]
    out["peak MB"] = table["peak_mb"]
    out["max logit diff vs PyTorch fp32"] = table["max_abs_logit_diff"]
    out["arg-max agreement"] = table["argmax_agreement"]
    if table["test_dice"].notna().any():
        out["test Dice (timed volumes)"] = table["test_dice"]
        out["Dice change"] = table["dice_change"]
    return out.rename(columns={"gflops": "GFLOPs", "gflops_224": "GFLOPs at 224", "file_mb": "file MB"})
