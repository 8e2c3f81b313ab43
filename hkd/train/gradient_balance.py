"""Gradient balance of the loss terms, per block of the student.

Every epoch a run logs (``log.csv``) the gradient norm of the segmentation loss and of each distillation
term at its configured weight, over the whole student (``gradnorm_seg``, ``gradnorm_<term>``) and per block
of it (``gradnorm_<term>@<block>``: the blocks of :func:`hkd.models.model_blocks`, e.g. ``enc1``,
``bottleneck``, ``dec4``, ``head``), and of each term in the method's own adapters (blocks
``adapter.<module>``, which the segmentation loss does not reach and the whole-student norm leaves out).

A term's ratio in a block is its gradient norm there over the segmentation loss's in the same block. Under
AdamW each parameter follows its own gradient, so a block where a term's ratio is far above 1 follows that
term, whatever the whole-model ratio says. A run is flagged (:func:`flags`) where a term's ratio in some
block stays above :data:`FLAG_RATIO` after the distillation warm-up: its median over the epochs after
``distill_warmup`` exceeds it. Blocks a term does not reach have ratio 0 and are never flagged.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

PREFIX = "gradnorm_"
SEG = "seg"
AT = "@"  # gradnorm_<term>@<block>
ADAPTER = "adapter"  # adapter blocks are named adapter.<module> (adapter alone: parameters of the method itself)
BAND = (0.1, 10.0)  # the ratios the defaults aim for
FLAG_RATIO = BAND[1]


def column(term: str, block: str | None = None) -> str:
    """The ``log.csv`` column of ``term``'s gradient norm over the whole student, or in ``block``."""
    return f"{PREFIX}{term}" if block is None else f"{PREFIX}{term}{AT}{block}"


def is_adapter(block: str) -> bool:
    return block == ADAPTER or block.startswith(ADAPTER + ".")


def terms(log: pd.DataFrame) -> list[str]:
    """Distillation terms with a whole-student gradient norm next to the segmentation loss's."""
    if column(SEG) not in log:
        return []
    return [c[len(PREFIX):] for c in log.columns
            if c.startswith(PREFIX) and AT not in c and c != column(SEG)]


def blocks(log: pd.DataFrame) -> list[str]:
    """Student blocks (not adapters) with a segmentation gradient norm, in logged order."""
    head = column(SEG) + AT
    return [c[len(head):] for c in log.columns if c.startswith(head) and not is_adapter(c[len(head):])]


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    """num / den, undefined (NaN) where the reference norm is 0 or missing."""
    num, den = num.astype(float), den.astype(float)
    return (num / den).where(den > 0)


def block_ratios(log: pd.DataFrame) -> pd.DataFrame:
    """Long table (``epoch``, ``term``, ``block``, ``ratio``) of every term's ratio in every student block.

    ``block`` ``"model"`` holds the whole-student ratio; a log without per-block columns has only that.
    A block a term does not reach has ratio 0.
    """
    rows = []
    for term in terms(log):
        parts = {"model": (column(term), column(SEG))}
        parts.update({b: (column(term, b), column(SEG, b)) for b in blocks(log) if column(term, b) in log})
        for block, (num, den) in parts.items():
            rows.append(pd.DataFrame({"epoch": log["epoch"].to_numpy(), "term": term, "block": block,
                                      "ratio": _ratio(log[num], log[den]).to_numpy()}))
    if not rows:
        return pd.DataFrame(columns=["epoch", "term", "block", "ratio"])
    return pd.concat(rows, ignore_index=True)


def after_warmup(ratios: pd.DataFrame, warmup: float) -> pd.DataFrame:
    """The rows of epochs probed with the distillation terms at full weight: epoch > ``warmup``.

    An epoch's norms are probed on its first batches, at step ``(epoch - 1) * steps_per_epoch``, which is
    past a warm-up of ``warmup`` epochs when ``epoch - 1 >= warmup``.
    """
    return ratios[ratios["epoch"] - 1 >= warmup]


def post_warmup_medians(log: pd.DataFrame, warmup: float) -> pd.DataFrame:
    """Per term and student block: the median ratio over the epochs after the warm-up (``median``)."""
    late = after_warmup(block_ratios(log), warmup)
    late = late[late["block"] != "model"]
    return late.groupby(["term", "block"], sort=False)["ratio"].median().rename("median").reset_index()


def flags(history: Sequence[dict] | pd.DataFrame, warmup: float) -> list[str]:
    """``"<term>@<block>: 14x"`` for every term and student block whose median ratio after the warm-up
    exceeds :data:`FLAG_RATIO` (empty for runs without distillation terms or per-block norms)."""
    log = history if isinstance(history, pd.DataFrame) else pd.DataFrame(list(history))
    if log.empty or "epoch" not in log:
        return []
    medians = post_warmup_medians(log, warmup)
    high = medians[medians["median"] > FLAG_RATIO]
    return [f"{r.term}{AT}{r.block}: {r.median:.3g}x" for r in high.itertuples()]


def parse_flag(flag: str) -> tuple[str, str, float]:
    """``(term, block, ratio)`` of a flag written by :func:`flags`."""
    where, ratio = flag.rsplit(": ", 1)
    term, block = where.split(AT, 1)
    return term, block, float(ratio.rstrip("x"))

