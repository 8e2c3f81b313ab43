"""What the study figures draw from, gathered once and shared: :class:`StudyContext`.

Each part is computed the first time a figure reads it and kept for the next one, so ``hkd figures``
loads the checkpoints, selects the slices and predicts them once for all figures, and a figure that
reads only the training logs loads no model. The parts a figure may declare as its ``inputs``
(:data:`hkd.figures.catalog.INPUTS`) are listed by :meth:`StudyContext.has`.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hkd.data.dataset import load_slices, read_meta
from hkd.errors import DataError
from hkd.figures.runs import describe
from hkd.figures.slices import class_counts, resolve_organs, select_slices
from hkd.models.checkpoint import load_model

MAX_DEFAULT_ORGANS = 4  # organs of the attribution figures when none are named: the largest in the slices
LATENT_SLICES = 64  # validation slices in the latent PCA (chosen by organ coverage, across patients)


@torch.no_grad()
def _predict(model: torch.nn.Module, images: torch.Tensor, device: torch.device) -> np.ndarray:
    return model(images.to(device)).argmax(1).cpu().numpy()


def _table(path: Path, flag: str, columns: tuple[str, ...], expected: str) -> pd.DataFrame:
    """A CSV input of the figures, refused in one line naming ``flag`` and the file when unreadable or short of
    ``columns``: found when the context is prepared, before any figure is drawn."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{flag} {path}: not a readable CSV ({' '.join(str(exc).split())[:200]})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{flag} {path}: no column {', '.join(missing)} (expected {expected})")
    return table


class StudyContext:
    """The study's checkpoints, slices, logs and summary, as the figures read them.

    ``models`` maps display names to checkpoints (in display order); ``slice_selection`` is 'coverage'
    (``n_slices`` slices, see :func:`hkd.figures.slices.select_slices`) or (case, slice) pairs;
    ``organs`` names the organs of the attribution figures (default: the largest few in the selected
    slices). ``logs`` maps run names to ``log.csv`` files, ``summary_csv`` is the summary table and
    ``runs`` describes each name of ``models`` and ``logs`` (:func:`hkd.figures.runs.describe`).
    """

    def __init__(self, prepared: str | Path, models: dict[str, Path], *,
                 slice_selection: str | list[tuple[str, int]] = "coverage", organs: list[str] | None = None,
                 n_slices: int = 2, logs: dict[str, Path] | None = None, summary_csv: str | Path | None = None,
                 device: str = "cpu", runs: dict[str, dict] | None = None, cost_csv: str | Path | None = None,
                 reliability_csv: str | Path | None = None):
        self.prepared = Path(prepared)
        self.checkpoints = dict(models)
        self.slice_selection = slice_selection
        self.n_slices = n_slices
        self.log_files = dict(logs or {})
        self.summary_csv = None if summary_csv is None else Path(summary_csv)
        self.cost_csv = None if cost_csv is None else Path(cost_csv)
        self.reliability_csv = None if reliability_csv is None else Path(reliability_csv)
        self.device = torch.device(device)
        self.runs = runs
        self.meta = read_meta(self.prepared)
        self.classes: list[str] = self.meta["classes"]
        self.n_classes = len(self.classes)
        self.organ_ids = resolve_organs(organs, self.classes)  # the named organs' class ids, or None

    # --- which inputs the study has -------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        """Whether the study gives the context input ``name`` (a key of :data:`hkd.figures.catalog.INPUTS`)."""
        given = {"models": bool(self.checkpoints), "latent_slices": True, "logs": bool(self.log_files),
                 "summary": self.summary_csv is not None, "cost": self.cost_csv is not None,
                 "reliability": self.reliability_csv is not None}
        if name not in given:
            raise ValueError(f"unknown figure input '{name}'; known: {', '.join(given)}")
        return given[name]

    def prepare(self, inputs: Iterable[str]) -> None:
        """Compute the parts behind ``inputs`` now: a bad slice or organ is reported before any figure is drawn."""
        parts = {"models": ("targets", "models", "predictions"), "latent_slices": ("latent_rows",),
                 "logs": ("logs",), "summary": ("summary",), "cost": ("cost",), "reliability": ("reliability",)}
        for name in inputs:
            for part in parts[name]:
                getattr(self, part)

    # --- input 'models': the checkpoints and the selected slices --------------------------------------------

    @cached_property
    def data(self):
        """The validation slices (:class:`hkd.data.dataset.SliceSet`)."""
        return load_slices(self.prepared, "val")

    @cached_property
    def rows(self) -> list[int]:
        """Rows of :attr:`data` shown in the qualitative figures."""
        rows = select_slices(self.data, self.slice_selection, self.n_slices, self.n_classes, self.organ_ids)
        if not rows:
            raise ValueError("no validation slices selected")
        return rows

    @cached_property
    def images(self) -> torch.Tensor:
        """The selected slices as the models read them: (R, 1, S, S)."""
        return self.data.image[self.rows]

    @cached_property
    def truths(self) -> np.ndarray:
        """Their ground truth: (R, S, S) class ids."""
        return self.data.label[self.rows].numpy()

    @cached_property
    def where(self) -> list[tuple[str, int]]:
        """(case, slice index) of each selected slice."""
        return [(self.data.case[r], int(self.data.index[r])) for r in self.rows]

    @cached_property
    def shown(self) -> np.ndarray:
        """The selected slices in the figures' grey scale [0, 1]: (R, S, S)."""
        lo, hi = self.meta.get("scale", (0.0, 1.0))
        return ((self.images[:, 0] - lo) / (hi - lo)).numpy()

    @cached_property
    def attribution_organs(self) -> list[int]:
        """The organs of the attribution figures: the named ones, else the largest few in the slices."""
        if self.organ_ids is not None:
            return self.organ_ids
        area = class_counts(self.truths, self.n_classes).sum(0)
        return [int(c) for c in np.argsort(-area[1:], kind="stable") + 1 if area[c] > 0][:MAX_DEFAULT_ORGANS]

    @cached_property
    def targets(self) -> list[tuple[int, int]]:
        """(selected slice, organ) pairs of the attribution figures: each organ where the ground truth has it."""
        wanted = self.attribution_organs
        targets = [(i, c) for i in range(len(self.rows)) for c in wanted if (self.truths[i] == c).any()]
        if not targets:
            raise ValueError(f"none of the organs {[self.classes[c] for c in wanted]} is in the selected slices")
        return targets

    @cached_property
    def loaded(self) -> dict[str, tuple[torch.nn.Module, dict]]:
        """Each checkpoint's model (on :attr:`device`, eval mode) and spec, by display name."""
        out = {}
        for name, path in self.checkpoints.items():
            model, spec = load_model(path)
            out[name] = (model.to(self.device), spec)
        return out

    @property
    def models(self) -> dict[str, torch.nn.Module]:
        """The loaded models by display name, in display order."""
        return {name: model for name, (model, _) in self.loaded.items()}

    @property
    def specs(self) -> dict[str, dict]:
        """Each model's spec by display name."""
        return {name: spec for name, (_, spec) in self.loaded.items()}

    @cached_property
    def predictions(self) -> dict[str, np.ndarray]:
        """Each model's segmentation of the selected slices: (R, S, S) class ids."""
        return {name: _predict(model, self.images, self.device) for name, model in self.models.items()}

    @cached_property
    def seeds_note(self) -> str:
        """Which seeds the shown students are of (``students of seed 0``), or '' when none is known."""
        seeds = sorted({describe(n, self.runs)["seed"] for n in self.checkpoints} - {None}, key=int)
        return f"students of seed {', '.join(seeds)}" if seeds else ""

    # --- input 'latent_slices' ------------------------------------------------------------------------------

    @cached_property
    def latent_rows(self) -> list[int]:
        """Rows of :attr:`data` in the latent PCA: the best covered, spread over patients."""
        return select_slices(self.data, "coverage", LATENT_SLICES, self.n_classes)

    # --- inputs 'logs' and 'summary' ------------------------------------------------------------------------

    @cached_property
    def logs(self) -> dict[str, pd.DataFrame]:
        """Every run's training log by run name."""
        return {run: pd.read_csv(path) for run, path in self.log_files.items()}

    @cached_property
    def summary(self) -> pd.DataFrame:
        """The summary table: method, params, dice_mean, dice_std (the teacher's method is 'teacher')."""
        if self.summary_csv is None:
            raise ValueError("this study context has no summary table (summary_csv)")
        return _table(self.summary_csv, "--summary", ("method", "params", "dice_mean"), "hkd tables' summary.csv")

    @cached_property
    def cost(self) -> pd.DataFrame:
        """The cost table of ``hkd cost``: one row per model and runtime (params, latency_ms, threads, ...)."""
        if self.cost_csv is None:
            raise ValueError("this study context has no cost table (cost_csv)")
        return _table(self.cost_csv, "--cost", ("params", "runtime", "latency_ms", "threads"), "hkd cost's cost.csv")

    @cached_property
    def reliability(self) -> pd.DataFrame:
        """The reliability table of ``hkd tables``: per model (method, width) and confidence bin, pixels, mean
        confidence and accuracy."""
        if self.reliability_csv is None:
            raise ValueError("this study context has no reliability table (reliability_csv)")
        return _table(self.reliability_csv, "--reliability", ("method", "width", "bin", "pixels", "accuracy"),
                      "hkd tables' reliability.csv")
