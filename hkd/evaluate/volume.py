"""Volume-level evaluation of one trained model on the prepared test (or validation) cases.

Each case is predicted slice by slice at the training resolution, the label map is mapped back
onto the native grid (nearest neighbour, as TransUNet does), and Dice, IoU, VOE, RVD and HD95 (mm and
voxels) are computed per organ (or tumour) with :func:`hkd.evaluate.metrics.case_metrics`.

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
import torch.nn.functional as F
from tqdm import tqdm

from hkd.errors import DataError
from hkd.data.dataset import load_volume, read_meta
from hkd.data.preprocess import pad_to_square, resize_slices
from hkd.devices import resolve_device
from hkd.evaluate.metrics import case_metrics
from hkd.models import count_parameters
from hkd.models.checkpoint import load_model

COLUMNS = ["model", "method", "width", "params", "seed", "status", "converged", "convergence", "stalled",
           "gradient_flags",
           "case", "organ", "empty", "metric", "value"]
METRICS = ("dice", "iou", "voe", "rvd", "hd95_mm", "hd95_vox")


@torch.no_grad()
def predict_volume(model: torch.nn.Module, image: np.ndarray, size: int, device, batch_size: int = 16,
                   scale: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Label map (D, H, W) for an image volume (D, H, W) at native resolution, scaled to ``scale``."""
    d, h, w = image.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    out = np.empty((d, h, w), dtype=np.uint8)
    for i in range(0, d, batch_size):
        chunk = resize_slices(pad_to_square(np.asarray(image[i:i + batch_size], np.float32), scale[0]), size, "image",
                              scale)
        x = torch.from_numpy(chunk)[:, None].to(device)
        pred = model(x).argmax(1).to(torch.uint8)[:, None]
        pred = F.interpolate(pred, size=(side, side), mode="nearest-exact")[:, 0].cpu().numpy()
        out[i:i + batch_size] = pred[:, top:top + h, left:left + w]
    return out


def run_checkpoint(run_dir: Path) -> tuple[Path, dict]:
    """The checkpoint to evaluate and the run's metrics: best.pt, or last.pt for a diverged run."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ckpt = run_dir / ("last.pt" if metrics["status"] == "diverged" else "best.pt")
    return ckpt, metrics


def evaluate_run(run_dir: str | Path, prepared: str | Path, *, model_name: str, method: str, width: str,
                 seed: int, part: str = "test", device: str = "cpu", progress: bool = True) -> pd.DataFrame:
    """Tidy table (one row per model, case, organ and metric) for the run in ``run_dir``; ``progress``
    shows a bar over the cases."""
    run_dir, prepared = Path(run_dir), Path(prepared)
    meta = read_meta(prepared)
    classes = {i: name for i, name in enumerate(meta["classes"]) if i > 0}
    case_ids = list(meta["split"].get(part) or [])
    if not case_ids:  # a table of NaN means would look like a result
        raise DataError(f"{prepared / 'dataset.json'}: the '{part}' part has no cases, so there is nothing to "
                        "evaluate (see data.split)")
    ckpt, run_metrics = run_checkpoint(run_dir)
    dev = resolve_device(device)
    model, _ = load_model(ckpt)
    model.to(dev)
    params = count_parameters(model)
    run = {"status": run_metrics["status"], "converged": run_metrics.get("converged"),
           "convergence": run_metrics.get("convergence", ""), "stalled": run_metrics.get("stalled"),
           "gradient_flags": "; ".join(run_metrics.get("gradient_flags") or [])}
    rows = []
    for case_id in tqdm(case_ids, desc=f"{model_name}: {part} cases", unit="case", disable=not progress,
                        mininterval=5):
        image, label, spacing = load_volume(prepared, case_id)
        pred = predict_volume(model, image, int(meta["image_size"]), dev, scale=tuple(meta.get("scale", (0.0, 1.0))))
        for r in case_metrics(pred, label, spacing, classes):
            for metric in METRICS:
                rows.append({"model": model_name, "method": method, "width": width, "params": params,
                             "seed": seed, **run, "case": case_id,
                             "organ": r["organ"], "empty": r["empty"], "metric": metric, "value": r[metric]})
    return pd.DataFrame(rows, columns=COLUMNS)
