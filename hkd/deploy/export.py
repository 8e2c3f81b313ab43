"""``hkd export``: a trained network alone as ONNX, checked against ONNX Runtime before it is written.

The file holds the network of the checkpoint and nothing else (no teacher, optimiser or distillation
adapters): input ``image`` (N, 1, H, W) float32 prepared as the metadata says, output ``logits``
(N, C, H, W). The batch is dynamic; so are H and W (multiples of 16) when the network exports that way
(SqueezeUNet does; TransUNet's position embeddings fix its grid at the training size). The metadata
holds the preprocessing (``hkd.preprocessing``, :mod:`hkd.infer.preprocessing`), the model spec and
the parity measured at export, so ``hkd predict`` needs nothing else.

Before anything is written, ONNX Runtime runs the exported graph on CT slices beside PyTorch: the
largest logit difference must stay within :data:`LOGIT_TOLERANCE` and the arg-max agree on at least
:data:`ARGMAX_AGREEMENT` of the pixels (resize operators have exported with other coordinate conventions
before; random input would not show it). The slices are the test cases' of the prepared data the model was
trained on, resized as for evaluation; without it (a checkpoint alone), those of a generated phantom case
prepared as the checkpoint's own record says, and the report says which.

``int8``: static quantisation (ONNX Runtime, QDQ, weights int8 per output channel, activations uint8,
min-max ranges calibrated on training slices); its Dice per class on the test cases, its arg-max agreement
with the float model and its latency are reported beside the float model's. It is written only if it keeps
the mean test Dice within a limit of the float model's (:data:`INT8_DICE_LOSS` unless told otherwise); past
it nothing is written and the error says by how much.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from hkd.data.dataset import load_slices, load_volume, read_meta
from hkd.errors import DataError
from hkd.infer import runtime
from hkd.infer.grid import model_slices, windowed
from hkd.models.inference import inference_network, int8_float_parts

log = logging.getLogger("hkd")

LOGIT_TOLERANCE = 1e-4
ARGMAX_AGREEMENT = 0.9999
OPSET = 18


# The exporter's and its graph optimiser's loggers: their INFO lines (hundreds per model: "Removed 83 unused
# nodes", "The value 'step' is not 1.") would fill a job's log; their errors still show.
EXPORT_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")


def _quiet_export(network: torch.nn.Module, example: torch.Tensor, dynamic_shapes):
    import logging as _logging

    loggers = [_logging.getLogger(name) for name in EXPORT_LOGGERS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(_logging.ERROR)
        try:
            return torch.onnx.export(network, (example,), None, dynamo=True, input_names=["image"],
                                     output_names=["logits"], dynamic_shapes=dynamic_shapes, opset_version=OPSET,
                                     verbose=False)
        finally:
            for logger, level in zip(loggers, previous):
                logger.setLevel(level)


def _without_trace(proto):
    """``proto`` without the exporter's debugging notes (each node's Python stack trace, FX node and module path,
    the exported program's signature): the stack traces name the absolute path of the Python files that ran
    the export, which a shared model file should not carry, and which made the same checkpoint export to other
    bytes from another folder."""
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        graph.ClearField("metadata_props")
        for node in graph.node:
            node.ClearField("metadata_props")
            for attribute in node.attribute:  # a control-flow node's subgraphs
                graphs.extend([attribute.g] if attribute.HasField("g") else attribute.graphs)
    for function in proto.functions:
        for node in function.node:
            node.ClearField("metadata_props")
    return proto


def _runs_at(proto, network: torch.nn.Module, size: int) -> bool:
    """Whether the exported graph runs at ``size`` px and matches the network there (random input)."""
    x = np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32)
    try:
        got = runtime.ort_runner(runtime.ort_session(proto.SerializeToString(), 1))(x)
    except Exception:  # noqa: BLE001: ONNX Runtime refuses the shape
        return False
    with torch.inference_mode():
        want = network(torch.from_numpy(x)).numpy()
    return got.shape == want.shape and float(np.abs(got - want).max()) <= LOGIT_TOLERANCE


def to_onnx(network: torch.nn.Module, size: int, spec: dict | None = None):
    """The network as an ONNX ModelProto with a dynamic batch and, where it exports and then runs correctly
    at twice the size, dynamic H and W; returns (proto, whether the spatial size is dynamic). With ``spec``,
    the architecture's inference form is exported (:func:`hkd.models.inference.inference_network`: the same
    function)."""
    import onnxscript  # noqa: F401 (torch's ONNX exporter needs it)

    network = network.eval().float()
    exported = inference_network(network, spec) if spec else network  # the same function, faster
    example = torch.zeros(2, 1, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    if (spec or {}).get("arch") != "transunet":  # TransUNet's position embeddings are traced at one grid size
        height, width = torch.export.Dim("h16", min=1, max=256), torch.export.Dim("w16", min=1, max=256)
        try:
            proto = _without_trace(_quiet_export(exported, example,
                                                 ({0: batch, 2: 16 * height, 3: 16 * width},)).model_proto)
            if _runs_at(proto, network, 2 * size):
                return proto, True
            log.info("spatial size fixed at %d px: the graph exported with a dynamic size is wrong at %d px", size,
                     2 * size)
        except Exception as exc:  # noqa: BLE001: a network whose size is fixed
            log.info("spatial size fixed at %d px (%s)", size, " ".join(str(exc).split())[:160])
    return _without_trace(_quiet_export(exported, example, ({0: batch},)).model_proto), False


def evaluation_slices(prepared: Path, size: int, part: str = "test", limit: int | None = None) -> np.ndarray:
    """The slices of the ``part`` cases (test, else validation), prepared as ``hkd evaluate`` prepares them:
    (N, 1, S, S) float32; ``limit`` spread evenly over them."""
    meta = read_meta(prepared)
    cases = list(meta["split"].get(part) or meta["split"].get("val") or [])
    if not cases:
        raise DataError(f"{prepared / 'dataset.json'}: no test or validation cases to check the export on")
    scale = tuple(meta.get("scale", (0.0, 1.0)))
    slices = np.concatenate([model_slices(load_volume(prepared, c)[0], size, scale) for c in cases])
    if limit and len(slices) > limit:
        slices = slices[np.linspace(0, len(slices) - 1, limit).round().astype(int)]
    return np.ascontiguousarray(slices, dtype=np.float32)


GENERATED = "a generated phantom case, prepared as the checkpoint records (no --data)"


def generated_slices(prep: dict, n_slices: int = 12) -> np.ndarray:
    """Axial slices of a generated abdominal CT phantom case prepared as ``prep`` says (window, scale, pad,
    resize): (N, 1, S, S) float32, for a parity check without prepared data."""
    from hkd.data.nifti import to_display
    from hkd.data.phantom import generate_case

    size = int(prep["image_size"])
    image, _, affine = generate_case(0, 0, size=max(2 * size, 128), n_slices=n_slices)
    return model_slices(windowed(to_display(image, affine), prep), size, tuple(prep["scale"]))


def compare(reference, candidate, slices: np.ndarray, batch_size: int = 16) -> dict:
    """Largest absolute logit difference and arg-max agreement of two runners on ``slices``."""
    worst, agree, pixels = 0.0, 0, 0
    for i in range(0, len(slices), batch_size):
        a, b = reference(slices[i:i + batch_size]), candidate(slices[i:i + batch_size])
        worst = max(worst, float(np.abs(a - b).max()))
        agree += int((a.argmax(1) == b.argmax(1)).sum())
        pixels += a.shape[0] * a.shape[2] * a.shape[3]
    return {"slices": int(len(slices)), "pixels": pixels, "max_abs_logit_diff": worst,
            "argmax_agreement": agree / pixels}


def _with_metadata(proto, meta: dict[str, str]):
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "hkd export"
    return proto


#: Training slices that calibrate an int8 model (``--calibration-slices``'s default, ``hkd cost``'s int8 row).
CALIBRATION_SLICES = 64


def calibration_slices(prepared: Path, n: int, seed: int = 0) -> np.ndarray:
    """``n`` training slices (seeded draw) for the int8 calibration."""
    train = load_slices(prepared, "train")
    pick = np.sort(np.random.default_rng(seed).choice(len(train), size=min(n, len(train)), replace=False))
    return np.ascontiguousarray(train.image[torch.from_numpy(pick)].numpy(), dtype=np.float32)


#: The largest mean-Dice loss at which an int8 model is offered: on the validation cases it chooses which
#: layers stay in float (:func:`int8_keeping_dice`); on the test cases it decides whether the model is written
#: at all (:func:`check_int8_test_loss`).
INT8_DICE_LOSS = 0.005


#: The operators --int8 quantises (:func:`quantize_int8`).
QUANTISED_OPS = ("Conv",)


def _pre_processed(proto):
    """The float graph as quantisation starts from it (shapes inferred, graph cleaned up), its node names final."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        src, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        onnx.save(proto, src)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            except Exception as exc:  # noqa: BLE001: optional graph clean-up; quantise the graph as exported
                log.info("int8: pre-processing skipped (%s)", " ".join(str(exc).split())[:160])
                return proto
        return onnx.load(str(pre))


def quantize_int8(proto, calibration: np.ndarray, batch_size: int = 8, keep_float: list[str] | None = None,
                  only: list[str] | None = None):
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations, min-max calibration) of the
    convolutions of a pre-processed graph (:func:`_pre_processed`); the nodes ``keep_float`` stay float, or only
    ``only`` is quantised.

    Only convolutions: the sums, resizes and pools between them run in float on the convolutions' dequantised
    outputs, and their results are not rounded again. A student's inference form
    (:mod:`hkd.models.squeezeunet_inference`) sums one convolution per concatenated part; quantising each sum
    again rounds a tensor the trained network never held. On the default study's students, quantising every
    operator changed the arg-max on 11-14% of the foreground pixels (1 - Dice of int8 labels against fp32
    labels, validation cases), convolutions only on 7% at the same latency."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": calibration[i:i + batch_size]}
                                 for i in range(0, len(calibration), batch_size)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, src)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(QUANTISED_OPS),
                            nodes_to_exclude=keep_float or [],
                            nodes_to_quantize=only or [])
        return onnx.load(str(dst))


def _quantised_nodes(quantised) -> list[str]:
    """The convolutions of a quantised graph that read a dequantised input: the layers quantisation reached."""
    dequantised = {o for n in quantised.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in quantised.graph.node if n.op_type in QUANTISED_OPS and dequantised.intersection(n.input)]


def convolutions_of(graph_proto, prefixes: tuple[str, ...]) -> list[str]:
    """The names of the convolutions of a pre-processed graph whose weights' names start with one of
    ``prefixes`` (the network's parameter names, which the exporter keeps)."""
    found = [n.name for n in graph_proto.graph.node
             if n.op_type in QUANTISED_OPS and len(n.input) > 1 and n.input[1].startswith(prefixes)]
    if prefixes and not found:
        raise RuntimeError(f"no convolution of the exported graph has a weight named {' or '.join(prefixes)}*: the "
                           "exporter no longer keeps the parameters' names (hkd.models.inference.INT8_FLOAT_PARTS)")
    return found


def _as_designed(pre, spec: dict, calibration: np.ndarray) -> tuple[object, list[str]]:
    """The int8 model of a pre-processed graph with the architecture's float parts in float, and those parts'
    convolutions."""
    by_design = convolutions_of(pre, int8_float_parts(spec))
    return quantize_int8(pre, calibration, keep_float=by_design), by_design


def int8_as_designed(proto, spec: dict, calibration: np.ndarray):
    """The int8 model ``--int8`` starts from, and ``hkd cost`` measures: the convolutions of ``proto`` quantised
    but for the architecture's float parts (:data:`hkd.models.inference.INT8_FLOAT_PARTS`), calibrated on
    ``calibration`` slices."""
    return _as_designed(_pre_processed(proto), spec, calibration)[0]


def int8_keeping_dice(proto, calibration: np.ndarray, prepared: Path, limit: float,
                      spec: dict) -> tuple[object, dict]:
    """The int8 model of ``proto`` whose mean Dice on the validation cases is within ``limit`` of the float
    model's, and how it was chosen.

    It starts from :func:`int8_as_designed` (the architecture's float parts in float, the other convolutions
    quantised). If that loses more than ``limit``, each quantised layer is quantised alone to measure what its
    quantisation costs, and the costliest stay in float too, one more at a time, until the loss is within the
    limit (measured on the validation cases, so the test cases stay unseen by the choice)."""
    pre = _pre_processed(proto)

    def val_dice(model) -> float:
        run = runtime.ort_runner(runtime.ort_session(model.SerializeToString(), 1))
        return float(np.mean(list(test_dice(run, prepared, "val").values())))

    fp32 = val_dice(pre)
    quantised, by_design = _as_designed(pre, spec, calibration)
    kept = list(by_design)
    layers = _quantised_nodes(quantised)
    loss = fp32 - val_dice(quantised)
    tried = {"float parts kept" if kept else "all layers int8": loss}
    if loss > limit:
        cost = {name: fp32 - val_dice(quantize_int8(pre, calibration, only=[name])) for name in layers}
        for name in sorted(layers, key=lambda n: -cost[n]):
            kept.append(name)
            quantised = quantize_int8(pre, calibration, keep_float=kept)
            loss = fp32 - val_dice(quantised)
            tried[f"{len(kept) - len(by_design)} more kept float"] = loss
            if loss <= limit:
                break
    total = sum(n.op_type in QUANTISED_OPS for n in pre.graph.node)
    choice = {"part": "val", "limit": limit, "val_mean_dice_fp32": fp32, "val_mean_dice_loss": loss,
              "layers": total, "float_parts": list(int8_float_parts(spec)), "kept_float": kept,
              "kept_for_dice": kept[len(by_design):], "tried": tried}
    if loss > limit:
        raise DataError(f"--int8: even with all {total} layers kept in float, the validation Dice drops by "
                        f"{loss:.4f} > {limit}; nothing was written")
    return quantised, choice


def case_dice(run, prepared: Path, part: str = "test") -> dict[str, list[float]]:
    """Dice per class and ``part`` case (in the split's order), predicted as ``hkd evaluate`` predicts."""
    from hkd.evaluate.metrics import case_metrics
    from hkd.evaluate.volume import predict_volume

    meta = read_meta(prepared)
    classes = {i: name for i, name in enumerate(meta["classes"]) if i > 0}
    scores: dict[str, list[float]] = {name: [] for name in classes.values()}
    for case in meta["split"].get(part) or []:
        image, label, spacing = load_volume(prepared, case)
        pred = predict_volume(run, image, int(meta["image_size"]), tuple(meta.get("scale", (0.0, 1.0))))
        for row in case_metrics(pred, label, spacing, classes):
            scores[row["organ"]].append(float(row["dice"]))
    return {name: v for name, v in scores.items() if v}


def class_means(cases: dict[str, list[float]]) -> dict[str, float]:
    """Each class's mean over the cases of :func:`case_dice`."""
    return {name: float(np.mean(v)) for name, v in cases.items()}


def test_dice(run, prepared: Path, part: str = "test") -> dict[str, float]:
    """Mean Dice per class over the ``part`` cases, predicted as ``hkd evaluate`` predicts."""
    return class_means(case_dice(run, prepared, part))


def dice_change_ci(reference: dict[str, list[float]], candidate: dict[str, list[float]]) -> dict:
    """The mean Dice change (candidate - reference, the mean over classes) with its 95% CI from a paired
    bootstrap over the cases: how far the change could move on other patients."""
    from hkd.evaluate.stats import paired_bootstrap_ci

    per_case = np.mean([np.subtract(candidate[c], reference[c]) for c in reference], axis=0)
    mean, low, high = paired_bootstrap_ci(per_case)
    return {"change": mean, "ci95": [low, high], "cases": int(per_case.size)}


def check_int8_test_loss(checkpoint: Path, q: dict, limit: float) -> None:
    """Refuse an int8 model (``q``: its report) whose mean test Dice falls more than ``limit`` below the float
    model's: a reduced precision is offered only where it keeps the Dice. A gain passes."""
    m = q["mean_dice"]
    if -m["change"] > limit:
        worst = sorted(q["dice"].items(), key=lambda item: item[1]["change"])[:2]
        raise DataError(f"--int8: {checkpoint} quantised loses {-m['change']:.4f} mean test Dice (95% CI "
                        f"[{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}] over {m['cases']} test cases; most in "
                        + ", ".join(f"{organ} {d['change']:+.4f}" for organ, d in worst)
                        + f"), more than the limit of {limit}; nothing was written (--int8-dice-loss sets the "
                        "limit; the fp32 export keeps the Dice)")


def export(checkpoint: Path, prepared: Path | None, *, int8: bool = False, calibration: int | None = None,
           check_slices: int | None = None, threads: int = 1, runs: int = 20,
           int8_dice_loss: float | None = None) -> tuple[object, dict]:
    """The ONNX model of ``checkpoint`` (ModelProto, with hkd's metadata) and the export report. ``prepared``
    None: the parity is checked on a generated case (``int8`` needs prepared data). ``int8_dice_loss``: the
    largest mean Dice loss of the int8 model (:data:`INT8_DICE_LOSS` when None).

    Raises DataError when ONNX Runtime and PyTorch disagree beyond the tolerances, or the int8 model loses
    more Dice than allowed (nothing is written then).
    """
    calibration = CALIBRATION_SLICES if calibration is None else calibration
    if int8 and prepared is None:
        raise DataError("--int8: needs --data, the prepared data the model was trained on (its training slices "
                        "calibrate the quantisation, its test cases measure the Dice change)")
    model = runtime.load_checkpoint(checkpoint)
    prep = model.preprocessing
    size = int(prep["image_size"])
    if prepared is not None:
        meta = read_meta(prepared)
        if list(meta["classes"]) != list(prep["classes"]) or int(meta["image_size"]) != size:
            raise DataError(f"--data {prepared}: its classes {meta['classes']} at {meta['image_size']} px are not "
                            f"the {prep['classes']} at {size} px that {checkpoint} was trained on")
    proto, dynamic = to_onnx(model.network, size, model.spec)
    session = runtime.ort_session(proto.SerializeToString(), threads)
    if prepared is None:
        slices = generated_slices(prep)
    else:
        slices = evaluation_slices(prepared, size, limit=check_slices)
    parity = {**compare(model.run, runtime.ort_runner(session), slices),
              "on": GENERATED if prepared is None else f"the test cases of {prepared}"}
    report = {"export": {"checkpoint": str(checkpoint), "format": "onnx", "opset": OPSET, "dynamic_batch": True,
                         "dynamic_spatial": dynamic, "image_size": size,
                         "tolerance": {"max_abs_logit_diff": LOGIT_TOLERANCE, "argmax_agreement": ARGMAX_AGREEMENT}},
              "parity": parity}
    if parity["max_abs_logit_diff"] > LOGIT_TOLERANCE or parity["argmax_agreement"] < ARGMAX_AGREEMENT:
        raise DataError(f"{checkpoint}: ONNX Runtime differs from PyTorch on {parity['slices']} slices of "
                        f"{parity['on']} (largest "
                        f"logit difference {parity['max_abs_logit_diff']:.3g} > {LOGIT_TOLERANCE:g}, or arg-max "
                        f"agreement {parity['argmax_agreement']:.6f} < {ARGMAX_AGREEMENT}); nothing was written")
    kind = "fp32"
    if int8:
        limit = INT8_DICE_LOSS if int8_dice_loss is None else float(int8_dice_loss)
        quantised, choice = int8_keeping_dice(proto, calibration_slices(prepared, calibration), prepared, limit,
                                              model.spec)
        q_session = runtime.ort_session(quantised.SerializeToString(), threads)
        q_run = runtime.ort_runner(q_session)
        fp32_cases, int8_cases = case_dice(runtime.ort_runner(session), prepared), case_dice(q_run, prepared)
        fp32_dice, int8_dice = class_means(fp32_cases), class_means(int8_cases)
        one = np.ascontiguousarray(slices[:1])
        report["int8"] = {
            "calibration_slices": int(min(calibration, len(load_slices(prepared, "train")))),
            "scheme": "static QDQ of the convolutions, int8 weights per output channel, uint8 activations, "
                      "min-max calibration; the architecture's float parts stay float",
            "choice": choice,
            "agreement_with_fp32": compare(runtime.ort_runner(session), q_run, slices),
            "dice": {c: {"fp32": fp32_dice[c], "int8": int8_dice[c], "change": int8_dice[c] - fp32_dice[c]}
                     for c in fp32_dice},
            "mean_dice": {"fp32": float(np.mean(list(fp32_dice.values()))),
                          "int8": float(np.mean(list(int8_dice.values()))),
                          **dice_change_ci(fp32_cases, int8_cases), "limit": limit},
            "latency_ms": {"threads": threads, "size": size,
                           "fp32": runtime.latency(runtime.ort_runner(session), one, runs),
                           "int8": runtime.latency(q_run, one, runs)},
        }
        check_int8_test_loss(checkpoint, report["int8"], limit)
        proto, kind = quantised, "int8"
    report["export"]["kind"] = kind
    proto = _with_metadata(proto, {
        runtime.META_PREPROCESSING: json.dumps(prep), runtime.META_SPEC: json.dumps(model.spec),
        runtime.META_KIND: kind, "hkd.parity": json.dumps(parity), "hkd.checkpoint": Path(checkpoint).name})
    return proto, report
