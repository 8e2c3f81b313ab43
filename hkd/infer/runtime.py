"""A trained model as one callable: prepared slices (N, 1, S, S) in, logits (N, C, S, S) out.

``--model`` of ``hkd predict`` and ``hkd cost`` is a checkpoint written by ``hkd train`` (run in PyTorch)
or an ONNX file written by ``hkd export`` (run in ONNX Runtime, or in OpenVINO with the ``openvino``
extra). Either carries its preprocessing (:mod:`hkd.infer.preprocessing`); an ONNX file without hkd's
metadata is refused.

Precision: ``fp32`` everywhere; ``bf16`` (reduced precision, where the CPU has bf16 arithmetic) in PyTorch
(autocast) and OpenVINO; an int8 ONNX file (``hkd export --int8``) runs as it was quantised. A reduced
precision is a deliberate choice: ``hkd cost`` measures its Dice change and arg-max agreement.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hkd import extras
from hkd.errors import DataError
from hkd.infer import preprocessing

#: Keys of the metadata ``hkd export`` writes into an ONNX file.
META_PREPROCESSING = "hkd.preprocessing"
META_SPEC = "hkd.spec"
META_KIND = "hkd.kind"  # "fp32" or "int8"
#: The runtimes of each kind of model file, the first its default.
RUNTIMES = {"checkpoint": ("pytorch",), "onnx": ("onnxruntime", "openvino")}
PRECISIONS = ("fp32", "bf16")
BF16_RUNTIMES = ("pytorch", "openvino")


@dataclass
class Model:
    """A loaded model: ``run`` maps float32 slices (N, 1, S, S) to float32 logits (N, C, S, S)."""

    path: Path
    runtime: str  # "pytorch", "onnxruntime" or "openvino"
    preprocessing: dict
    spec: dict
    run: object  # callable
    network: torch.nn.Module | None = None  # the PyTorch network (checkpoints only)
    precision: str = "fp32"  # "fp32", "bf16", or "int8" for an int8 ONNX file

    @property
    def classes(self) -> list[str]:
        return self.preprocessing["classes"]


def ort_session(path_or_bytes, threads: int = 0, spin: bool = True):
    """An ONNX Runtime CPU session (``threads`` 0: ONNX Runtime's default). ``spin`` False: its idle threads sleep
    instead of spinning between runs, leaving the cores to the work between them (a volume's resizing and
    writing): the 0.4M student's 512 x 512 x 100 volume on 2 threads 1.98 -> 1.22-1.57 s, but batch-1 latency
    4.8 -> 5.6 ms per slice (benchmarks/predict.py), so cost's latency keeps the default."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    source = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def ort_runner(session):
    """Slices in, logits out; a model exported with a fixed batch gets its batches (the last one padded)."""
    first = session.get_inputs()[0]
    name, batch = first.name, first.shape[0] if isinstance(first.shape[0], int) else None

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if batch is None or len(x) == batch:
            return session.run(None, {name: x})[0]
        parts = []
        for i in range(0, len(x), batch):
            chunk = x[i:i + batch]
            padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *x.shape[1:]), np.float32)])
            parts.append(session.run(None, {name: padded})[0][:len(chunk)])
        return np.concatenate(parts)

    return run


WARMUP = 3  # calls before a latency is timed


def latency(run, x: np.ndarray, runs: int = 20, warmup: int = WARMUP) -> dict:
    """Milliseconds per call of ``run(x)``: median, quartiles, min and max over ``runs`` after ``warmup``."""
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    q = np.percentile(times, [25, 50, 75])
    return {"median_ms": float(q[1]), "q25_ms": float(q[0]), "q75_ms": float(q[2]), "min_ms": float(min(times)),
            "max_ms": float(max(times)), "runs": runs}


def check_fits(model: Model, input_shape: list | None = None) -> None:
    """Refuse, before any scan is read, a model that cannot segment slices as its preprocessing makes them:
    an ONNX file of another fixed slice size (``input_shape``: its input's, a name for a free axis), or a
    network whose output channels are not its classes."""
    size, classes = int(model.preprocessing["image_size"]), model.classes
    if input_shape is not None:
        h, w = input_shape[2:4]
        if isinstance(h, int) and isinstance(w, int) and (h, w) != (size, size):
            raise DataError(f"--model {model.path}: takes slices of {h} x {w} pixels, but its preprocessing makes "
                            f"{size} x {size} ones")
    channels = model.run(np.zeros((1, 1, size, size), np.float32)).shape[1]
    if channels != len(classes):
        raise DataError(f"--model {model.path}: the network gives {channels} output channels, but its class list "
                        f"has {len(classes)} ({', '.join(classes)})")


def torch_runner(network: torch.nn.Module, device: torch.device | str = "cpu", precision: str = "fp32"):
    """Slices in, logits out, computed by ``network`` (in eval mode) on ``device``; ``bf16``: autocast."""
    network.eval().to(device)
    device = torch.device(device)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
            return network(x).float().cpu().numpy()

    return run


def openvino_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 on this CPU (the ``openvino`` extra installed)."""
    ov = extras.require("openvino", "OpenVINO's bf16", "--precision fp32")
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_runner(path: Path, threads: int = 0, precision: str = "fp32"):
    """Slices in, logits out, from an ONNX file in OpenVINO's CPU runtime at ``precision`` (its inference
    precision hint: OpenVINO computes in bf16 by default on a CPU that has it, so fp32 is asked for)."""
    ov = extras.require("openvino", "--runtime openvino", "--runtime onnxruntime")
    core = ov.Core()
    if precision == "bf16" and not openvino_bf16():
        raise DataError("--precision bf16: this CPU has no bf16 arithmetic (OpenVINO's CPU capabilities)")
    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(str(path), "CPU", config)

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(compiled(np.ascontiguousarray(x, dtype=np.float32))[0], dtype=np.float32)

    return run


def load_onnx(path: Path, threads: int = 0, runtime: str = "onnxruntime", precision: str = "fp32") -> Model:
    """An ONNX file written by ``hkd export``, run in ONNX Runtime (its idle threads sleeping: ``ort_session``)
    or OpenVINO."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a file that is not ONNX
        raise DataError(f"{path}: not a readable ONNX file ({' '.join(str(exc).split())[:200]})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if META_PREPROCESSING not in meta:
        raise DataError(f"{path}: an ONNX model not written by hkd export (no '{META_PREPROCESSING}' metadata), "
                        "so its preprocessing is unknown; export the checkpoint with hkd export")
    try:
        prep = json.loads(meta[META_PREPROCESSING])
        spec = json.loads(meta.get(META_SPEC, "{}"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: its hkd metadata is not JSON ({exc})") from None
    prep = preprocessing.checked(prep, str(path))
    if meta.get(META_KIND) == "int8" and precision != "fp32":
        raise DataError(f"--precision {precision}: {path} is an int8 model, which runs as it was quantised")
    run = (ort_runner(ort_session(proto.SerializeToString(), threads, spin=False)) if runtime == "onnxruntime"
           else openvino_runner(path, threads, precision))
    model = Model(path, runtime, prep, spec, run, precision="int8" if meta.get(META_KIND) == "int8" else precision)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    check_fits(model, [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims])
    return model


def load_checkpoint(path: Path, given_preprocessing: dict | None = None, precision: str = "fp32") -> Model:
    """A checkpoint written by ``hkd train``, run in PyTorch (eval mode, CPU)."""
    from hkd.models.checkpoint import load_model, load_state

    network, spec = load_model(path)
    prep = preprocessing.of_checkpoint(load_state(path), path, given_preprocessing)
    model = Model(path, "pytorch", prep, spec, torch_runner(network, precision=precision), network, precision)
    check_fits(model)
    return model


def load(path: str | Path, given_preprocessing: dict | None = None, threads: int = 0, runtime: str | None = None,
         precision: str = "fp32") -> Model:
    """A checkpoint (PyTorch) or an ONNX file written by ``hkd export`` (ONNX Runtime, or ``runtime``
    openvino), at ``precision`` (fp32, or bf16 in PyTorch and OpenVINO)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--model {path}: no such file")
    kind = "onnx" if path.suffix.lower() == ".onnx" else "checkpoint"
    runtime = runtime or RUNTIMES[kind][0]
    if runtime not in RUNTIMES[kind]:
        hint = "; export it first with hkd export" if kind == "checkpoint" else ""
        raise DataError(f"--runtime {runtime}: {'a checkpoint' if kind == 'checkpoint' else 'an ONNX file'} runs in "
                        f"{' or '.join(RUNTIMES[kind])}{hint}")
    if precision not in PRECISIONS:
        raise DataError(f"--precision {precision}: one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and runtime not in BF16_RUNTIMES:
        raise DataError(f"--precision {precision}: {runtime} computes in fp32 on the CPU; bf16 runs in "
                        f"{' or '.join(BF16_RUNTIMES)}")
    if kind == "onnx":
        if given_preprocessing is not None:
            raise DataError(f"--preprocessing: {path} carries its own; the option is for checkpoints written before "
                            "checkpoints recorded it")
        return load_onnx(path, threads, runtime, precision)
    return load_checkpoint(path, given_preprocessing, precision)
