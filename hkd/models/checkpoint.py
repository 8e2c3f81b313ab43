"""Checkpoints: plain state dicts written atomically, and the trained model rebuilt from one.

A checkpoint holds ``spec`` (the model spec as JSON) and ``model`` (its state dict); the trainer adds
what a run needs to resume. Loading uses ``weights_only=True``: no code is unpickled.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from hkd.io import atomic_path
from hkd.models import build_model


def save_state(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | Path) -> dict:
    """Load a checkpoint written by the trainer (plain state dicts, ``weights_only=True``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message adds a paragraph on weights_only=False; one line instead
        raise ValueError(f"{path}: not an hkd checkpoint (it holds Python objects, e.g. a pickled model; expected "
                         "the state dicts hkd train saves)") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{path}: not a readable hkd checkpoint, truncated or not written by torch.save "
                         f"(expected the state dicts hkd train saves; {first})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not an hkd checkpoint (a {type(state).__name__}, not a dict with 'spec')")
    return state


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild a trained model from a checkpoint; returns (model in eval mode, its spec)."""
    state = load_state(path)
    for key in ("spec", "model"):
        if key not in state:
            raise ValueError(f"{path}: not an hkd checkpoint (no '{key}')")
    try:
        spec = json.loads(state["spec"])
        if not isinstance(spec, dict):
            raise TypeError(f"a {type(spec).__name__}")
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not an hkd checkpoint ('spec' is not a JSON model spec: {exc})") from None
    model = build_model(spec)  # an unknown arch or bad spec raises ValueError naming it
    if not isinstance(state["model"], dict):
        raise ValueError(f"{path}: not an hkd checkpoint ('model' is not a state dict)")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ValueError(f"{path}: weights do not fit the model its spec describes ({first})") from None
    return model.eval(), spec
