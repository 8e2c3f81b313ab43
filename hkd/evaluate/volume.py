"""Volume-level evaluation of one trained model on the prepared test (or validation) cases.

Each case is segmented as ``hkd predict`` segments it in its nearest mode (slice batches at the training
resolution, the model's labels mapped back onto the native grid by nearest neighbour, as TransUNet does;
:func:`hkd.evaluate.calibration.segment_and_calibrate`); then Dice, IoU, VOE, RVD and HD95 (mm and voxels)
are computed per organ (or tumour) with :func:`hkd.evaluate.metrics.case_metrics`. The same pass gives the
case's calibration (:mod:`hkd.evaluate.calibration`), in rows of organ :data:`hkd.evaluate.metrics.CASE_ROW`:
the ECE and Brier score over all pixels and around the organs, before and after the temperature fitted on
the validation cases (``temperature``), and the region's reliability bins.

Every row also carries what the run's ``metrics.json`` says of the run: ``status`` (completed or diverged),
``converged`` (True/False; empty for a run trained before convergence was recorded), ``convergence`` (why)
and ``gradient_flags`` (the blocks a distillation term dominated after the warm-up, ``"; "``-separated,
empty when none).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from hkd.errors import DataError
from hkd.data.dataset import load_volume, read_meta
from hkd.devices import resolve_device
from hkd.evaluate import calibration
from hkd.evaluate.metrics import CASE_ROW, case_metrics
from hkd.infer.runtime import torch_runner
from hkd.infer.segment import Runner, segment_volume
from hkd.models import count_parameters
from hkd.models.checkpoint import load_model

COLUMNS = ["model", "method", "width", "params", "seed", "status", "converged", "convergence", "stalled",
           "gradient_flags",
           "case", "organ", "empty", "metric", "value"]
METRICS = ("dice", "iou", "voe", "rvd", "hd95_mm", "hd95_vox")  # per organ; per case: metrics.CALIBRATION_METRICS


BATCH = 16  # slices per step of an evaluation


def predict_volume(run: Runner, image: np.ndarray, size: int, scale: tuple[float, float] = (0.0, 1.0),
                   batch_size: int = BATCH) -> np.ndarray:
    """Label map (D, H, W) of a prepared volume (D, H, W) at native resolution, scaled to ``scale``, as evaluation
    predicts it (nearest-neighbour labels); ``run`` is a runtime's runner (:mod:`hkd.infer.runtime`)."""
    return segment_volume(run, image, size, scale, upsample="nearest", batch_size=batch_size)[0]


def run_checkpoint(run_dir: Path) -> tuple[Path, dict]:
    """The checkpoint to evaluate and the run's metrics: best.pt, or last.pt for a diverged run."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ckpt = run_dir / ("last.pt" if metrics["status"] == "diverged" else "best.pt")
    return ckpt, metrics


def evaluate_run(run_dir: str | Path, prepared: str | Path, *, model_name: str, method: str, width: str,
                 seed: int, part: str = "test", device: str = "cpu", progress: bool = True,
                 fit_on: str | Path | None = None) -> pd.DataFrame:
    """Tidy table (one row per model, case, organ and metric) for the run in ``run_dir``; ``progress``
    shows a bar over the cases. The temperature is fitted on the validation cases of ``fit_on`` (a prepared
    dataset; default ``prepared``): an external cohort is evaluated with the temperature of the study's own."""
    run_dir, prepared = Path(run_dir), Path(prepared)
    meta = read_meta(prepared)
    classes = {i: name for i, name in enumerate(meta["classes"]) if i > 0}
    case_ids = list(meta["split"].get(part) or [])
    if not case_ids:  # a table of NaN means would look like a result
        raise DataError(f"{prepared / 'dataset.json'}: the '{part}' part has no cases, so there is nothing to "
                        "evaluate (see data.split)")
    ckpt, run_metrics = run_checkpoint(run_dir)
    model, _ = load_model(ckpt)
    params = count_parameters(model)
    runner = torch_runner(model, resolve_device(device))
    run = {"status": run_metrics["status"], "converged": run_metrics.get("converged"),
           "convergence": run_metrics.get("convergence", ""), "stalled": run_metrics.get("stalled"),
           "gradient_flags": "; ".join(run_metrics.get("gradient_flags") or [])}
    size, scale = int(meta["image_size"]), tuple(meta.get("scale", (0.0, 1.0)))
    fit_on = prepared if fit_on is None else Path(fit_on)
    temperature = validation_temperature(runner, fit_on, read_meta(fit_on))
    rows = []

    def add(case_id, organ, empty, metric, value):
        rows.append({"model": model_name, "method": method, "width": width, "params": params, "seed": seed, **run,
                     "case": case_id, "organ": organ, "empty": empty, "metric": metric, "value": value})

    for case_id in tqdm(case_ids, desc=f"{model_name}: {part} cases", unit="case", disable=not progress,
                        mininterval=5):
        image, label, spacing = load_volume(prepared, case_id)
        pred, tallies = calibration.segment_and_calibrate(runner, image, label, spacing, size, scale, temperature,
                                                          BATCH)
        for r in case_metrics(pred, label, spacing, classes):
            for metric in METRICS:
                add(case_id, r["organ"], r["empty"], metric, r[metric])
        for key, tally in tallies.items():  # all, region, all_ts, region_ts
            suffix = {"all": "", "region": "_region", "all_ts": "_ts", "region_ts": "_region_ts"}[key]
            add(case_id, CASE_ROW, "n/a", f"ece{suffix}", tally.ece)
            add(case_id, CASE_ROW, "n/a", f"brier{suffix}", tally.brier)
        add(case_id, CASE_ROW, "n/a", "temperature", temperature)
        region = tallies["region"]
        for b in range(region.bins):
            for name, sums in (("count", region.count), ("confidence", region.confidence), ("correct", region.correct)):
                add(case_id, CASE_ROW, "n/a", f"reliability_{b:02d}_{name}", float(sums[b]))
    return pd.DataFrame(rows, columns=COLUMNS)


def validation_temperature(runner: Runner, prepared: Path, meta: dict) -> float:
    """The temperature of the model's logits fitted on the validation cases' region pixels (1 without any)."""
    size, scale = int(meta["image_size"]), tuple(meta.get("scale", (0.0, 1.0)))
    logits, labels = [], []
    for case_id in meta["split"].get("val") or []:
        image, label, spacing = load_volume(prepared, case_id)
        case_logits, case_labels = calibration.region_pixels(runner, image, label, spacing, size, scale, BATCH)
        logits.append(case_logits)
        labels.append(case_labels)
    if not logits:
        return 1.0
    return calibration.fit_temperature(*calibration.subsample(torch.cat(logits), torch.cat(labels)))
