"""Patient-level train/validation/test split: every case lands in exactly one part."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hkd.errors import DataError

PARTS = ("train", "val", "test")
# TransUNet's Synapse split: 18 training cases; its 12 test cases are divided into val and test here.
TRANSUNET_TRAIN = ["0005", "0006", "0007", "0009", "0010", "0021", "0023", "0024", "0026", "0027", "0028",
                   "0030", "0031", "0033", "0034", "0037", "0039", "0040"]
TRANSUNET_TEST = ["0001", "0002", "0003", "0004", "0008", "0022", "0025", "0029", "0032", "0035", "0036", "0038"]


def format_ratios(ratios) -> str:
    """Ratios as written in messages: 0.6/0.2/0.2."""
    return "/".join(f"{r:g}" for r in ratios)


def part_sizes(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Case counts per part: validation and test get round(n * ratio) (at least 1 each when n >= 3).

    Raises DataError when the ratios are invalid or leave a part empty for ``n`` cases (every part is
    used: train to fit, val to pick the best epoch, test to evaluate).
    """
    if abs(sum(ratios) - 1.0) > 1e-6 or min(ratios) < 0:
        raise DataError(f"data.split.ratios: {list(ratios)} must be non-negative and sum to 1")
    n_val = int(round(n * ratios[1]))
    n_test = int(round(n * ratios[2]))
    if n >= 3:
        n_val, n_test = max(n_val, 1 if ratios[1] > 0 else 0), max(n_test, 1 if ratios[2] > 0 else 0)
    n_train = max(n - n_val - n_test, 0)
    for part, size in zip(PARTS, (n_train, n_val, n_test)):
        if size < 1:
            raise DataError(f"data.split.ratios: {format_ratios(ratios)} of {n} case{'s' if n != 1 else ''} leave the "
                            f"'{part}' part empty")
    return n_train, n_val, n_test


def random_split(case_ids: list[str], ratios, seed: int) -> dict[str, list[str]]:
    """Shuffle cases with ``seed`` and cut them by ``ratios`` (train, val, test)."""
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_train, n_val, _ = part_sizes(len(ids), tuple(ratios))
    shuffled = [ids[i] for i in order]
    return {"train": sorted(shuffled[:n_train]), "val": sorted(shuffled[n_train:n_train + n_val]),
            "test": sorted(shuffled[n_train + n_val:])}


def transunet_split(case_ids: list[str], seed: int) -> dict[str, list[str]]:
    """TransUNet's 18 training cases; its 12 test cases halved into validation and test by ``seed``."""
    missing = sorted(set(TRANSUNET_TRAIN + TRANSUNET_TEST) - set(case_ids))
    if missing:
        raise DataError(f"data.split.preset 'transunet' needs Synapse cases {missing}, which the source lacks")
    order = np.random.default_rng(seed).permutation(len(TRANSUNET_TEST))
    half = len(TRANSUNET_TEST) // 2
    return {"train": list(TRANSUNET_TRAIN), "val": sorted(TRANSUNET_TEST[i] for i in order[:half]),
            "test": sorted(TRANSUNET_TEST[i] for i in order[half:])}


def read_split_file(path: str | Path, case_ids: list[str]) -> dict[str, list[str]]:
    """A user-supplied split: JSON with 'train', 'val', 'test' lists of case ids."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        split = {part: [str(c) for c in data[part]] for part in PARTS}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a split file with 'train', 'val' and 'test' lists ({exc})") from exc
    unknown = sorted({c for ids in split.values() for c in ids} - set(case_ids))
    if unknown:
        raise DataError(f"{path}: cases {unknown} are not in the source data")
    return split


def make_split(case_ids: list[str], preset: str, ratios=(0.6, 0.2, 0.2), seed: int = 0,
               file: str | None = None) -> dict[str, list[str]]:
    """Build and check a split by preset: 'random', 'transunet', 'file', or 'external' (every case a test case:
    a cohort that is only evaluated, ``data.external``)."""
    if preset == "external":
        if not case_ids:
            raise DataError("data.external: the external cohort has no cases")
        return {"train": [], "val": [], "test": sorted(case_ids)}
    if preset == "random":
        split = random_split(case_ids, ratios, seed)
    elif preset == "transunet":
        split = transunet_split(case_ids, seed)
    elif preset == "file":
        if not file:
            raise DataError("data.split.file: required when data.split.preset is 'file'")
        split = read_split_file(file, case_ids)
    else:
        raise DataError(f"data.split.preset: unknown preset '{preset}' (random, transunet, file, external)")
    check_split(split)
    return split


def split_argument(obj, where: str) -> dict[str, list[str]]:
    """A split given as a JSON object (``hkd prepare --split``), checked as :func:`make_split` checks its
    own: 'train', 'val' and 'test' lists of case ids, no part empty, no case in two parts; errors name
    ``where``."""
    if not isinstance(obj, dict) or not all(isinstance(obj.get(p), list) for p in PARTS):
        raise DataError(f"{where}: expected a JSON object with 'train', 'val' and 'test' lists of case ids")
    split = {part: [str(c) for c in obj[part]] for part in PARTS}
    try:
        check_split(split, test_only=obj.get("preset") == "external")
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    return split


def check_split(split: dict[str, list[str]], test_only: bool = False) -> None:
    """No case may appear in two parts, and no part may be empty (``test_only``: train and val must be)."""
    owner: dict[str, str] = {}
    for part in PARTS:
        for cid in split.get(part, []):
            if cid in owner:
                raise DataError(f"split: case {cid} is in both '{owner[cid]}' and '{part}'")
            owner[cid] = part
    for part in PARTS:
        if test_only and part != "test":
            if split.get(part):
                raise DataError(f"split: an external cohort's '{part}' part must be empty")
        elif not split.get(part):
            raise DataError(f"split: the '{part}' part is empty")
