"""Where a feature map lives (:class:`Feature`), and a network's blocks (:func:`partition`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn


@dataclass(frozen=True)
class Feature:
    """Where a named map lives: its channels and size, and its grid on the input image.

    Cell ``i`` of the map is centred at input pixel coordinate ``stride * i + offset`` (continuous
    coordinates: input pixel ``k`` spans ``[k, k + 1)``), on both axes.
    """

    channels: int
    height: int
    width: int
    stride: float
    offset: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.height, self.width

    def as_dict(self) -> dict:
        return asdict(self)


FeatureSpecs = dict[str, Feature]  # feature name -> where it lives


def partition(model: nn.Module, blocks: dict[str, list[str]]) -> dict[str, list[nn.Parameter]]:
    """The parameters of each block of ``model`` (block name -> module paths), in the order given.

    Every parameter must belong to exactly one block; a table whose blocks miss or repeat one is an
    error (raised here), so per-block quantities always add up to the whole model's.
    """
    out, seen = {}, {}
    for name, paths in blocks.items():
        out[name] = []
        for path in paths:
            try:
                module = model.get_submodule(path)
            except AttributeError:
                raise ValueError(f"{type(model).__name__}: block '{name}' names module '{path}', which the model "
                                 "does not have") from None
            for p in module.parameters():
                if id(p) in seen:
                    raise ValueError(f"{type(model).__name__}: a parameter is in blocks '{seen[id(p)]}' and '{name}'")
                seen[id(p)] = name
                out[name].append(p)
    missed = [n for n, p in model.named_parameters() if id(p) not in seen]
    if missed:
        raise ValueError(f"{type(model).__name__}: parameters in no block: {missed}")
    return out


def top_level_blocks(model: nn.Module) -> dict[str, list[str]]:
    """One block per top-level sub-module that holds parameters, in definition order (plus ``own`` for
    parameters set on the model itself): the blocks of a network without a block table."""
    blocks = {name: [name] for name, child in model.named_children() if any(True for _ in child.parameters())}
    if any(True for _ in model.parameters(recurse=False)):
        raise ValueError(f"{type(model).__name__} holds parameters outside its sub-modules; give the model spec a "
                         "'blocks' table (block name -> module paths)")
    return blocks
