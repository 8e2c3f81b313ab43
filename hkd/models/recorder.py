"""Named features read from any network by forward hooks: the one way hkd reads a feature.

A model spec names its features by module path (``{"bottleneck": "decoder.conv_more"}``); a
:class:`FeatureRecorder` hooks those modules and records what they return while the model runs its own
``forward``. The network is never edited: the recorder holds hook handles, nothing else. ``logits`` is
the model's output unless the spec names a module for it.

A recorded output is a map ``(B, C, h, w)``, or a token sequence ``(B, N, C)`` that is laid back onto its
grid (``N = h * w`` cells in row-major order, the grid's stride the same on both axes). Anything else, an
output that a later in-place operation changes (it would no longer be what the module returned), or a
module that runs more than once in a forward pass (a shared activation: which call is the feature?) is an
error naming the module.

:meth:`FeatureRecorder.describe` measures each feature's :class:`~hkd.models.base.Feature` (channels, size,
stride) from a forward pass on a probe input of the configured size; the grid offset follows the model's
``grid`` convention (see :data:`GRIDS`), which shapes alone cannot tell.
"""

from __future__ import annotations

import difflib
import math

import torch
from torch import nn

from hkd.models.base import Feature, FeatureSpecs

#: How a model's maps sit on the input: ``centred``, cell ``i`` of a stride-``s`` map is centred at input
#: coordinate ``s * (i + 0.5)`` (pooling, patch embeddings with kernel = stride); ``top-left``, at
#: ``s * i + 0.5`` (stride-``s`` convolutions with "same" padding centre cell ``i`` on pixel ``s * i``).
GRIDS = ("centred", "top-left")
OUTPUT = "logits"  # the feature that is the model's output unless a module is named for it


class FeatureError(ValueError):
    """A feature a model spec names that cannot be recorded (no such module, not a map, changed in place)."""


class _Stop(Exception):
    """Raised by a hook once every wanted feature is recorded: the rest of the forward pass is skipped."""


def _module(model: nn.Module, label: str, name: str, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        known = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(path, known, n=3, cutoff=0.6)
        hint = f"; close: {', '.join(close)}" if close else f"; top-level modules: {', '.join(n for n in known if '.' not in n)}"
        raise FeatureError(f"{label}: feature '{name}' names module '{path}', which the model does not have{hint}") from None


class FeatureRecorder:
    """Records the named features of ``model`` (``features``: name -> module path) by forward hooks.

    ``recorder_of(x)`` runs the model and returns every feature, ``recorder_of(x, names)`` only those (stopping
    the forward pass once the last is recorded, unless ``logits`` is among them); ``recorder.names``
    lists what it records; ``describe(size)`` measures where each map lives. ``label`` names the model
    in errors (e.g. ``"teacher (monai SwinUNETR)"``).
    """

    def __init__(self, model: nn.Module, features: dict[str, str], grid: str = "centred", label: str = "model",
                 in_channels: int = 1):
        if grid not in GRIDS:
            raise FeatureError(f"{label}: grid must be one of {', '.join(GRIDS)}, got {grid!r}")
        self.model, self.grid, self.label, self.in_channels = model, grid, label, in_channels
        self.paths = dict(features)
        self.names = tuple(dict.fromkeys([*self.paths, OUTPUT]))
        by_path: dict[str, list[str]] = {}
        for name, path in self.paths.items():
            by_path.setdefault(path, []).append(name)
        self._wanted: set[str] = set()
        self._stop_early = False
        self._record: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}
        self._versions: dict[str, tuple[str, torch.Tensor, int]] = {}
        self._input_hw: tuple[int, int] = (0, 0)
        self._handles = [_module(model, label, names[0], path).register_forward_hook(self._hook(path, names))
                         for path, names in by_path.items()]

    def close(self) -> None:
        """Remove the hooks (the model is as it was)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, path: str, names: list[str]):
        def hook(module, args, output):
            hit = [n for n in names if n in self._wanted]
            if not hit:
                return
            if not torch.compiler.is_compiling():
                self._calls[path] = self._calls.get(path, 0) + 1
                if self._calls[path] > 1:
                    raise FeatureError(f"{self.label}: feature '{hit[0]}' names module '{path}', which runs more than "
                                       "once in one forward pass (one module used at several places, e.g. a shared "
                                       "activation), so its map is ambiguous; name a module that runs once")
            fmap = self._as_map(path, output)
            # A compiled model's outputs are the graph's (their version counters say nothing of later
            # in-place use), so the check is skipped there.
            version = None if torch.compiler.is_compiling() else output._version
            for n in hit:
                self._record[n] = fmap
                self._versions[n] = (path, output, version)
            if self._stop_early and len(self._record) == len(self._wanted):
                raise _Stop
        return hook

    def _as_map(self, path: str, output) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise FeatureError(f"{self.label}: module '{path}' returns a {type(output).__name__}, not a tensor; "
                               "name a module that returns one map")
        if output.dim() == 4:
            return output
        if output.dim() == 3:  # tokens (B, N, C) on a grid of the input's aspect
            (h_in, w_in), n = self._input_hw, output.shape[1]
            stride = math.sqrt(h_in * w_in / n) if n else 0
            h, w = (round(h_in / stride), round(w_in / stride)) if stride else (0, 0)
            if h * w != n:
                raise FeatureError(f"{self.label}: module '{path}' returns {n} tokens, which are no grid on a "
                                   f"{h_in}x{w_in} input (a class token?); name a module that returns a map")
            return output.transpose(1, 2).reshape(output.shape[0], output.shape[2], h, w)
        raise FeatureError(f"{self.label}: module '{path}' returns a {output.dim()}-d tensor "
                           f"{tuple(output.shape)}; a feature is a map (B, C, h, w) or tokens (B, N, C)")

    def __call__(self, x: torch.Tensor, names=None) -> dict[str, torch.Tensor]:
        """The features ``names`` (default: all) of input ``x``, in forward order, ``logits`` last."""
        names = self.names if names is None else tuple(names)
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise FeatureError(f"{self.label} records no feature {', '.join(repr(n) for n in unknown)}; "
                               f"it records: {', '.join(self.names)}")
        wants_output = OUTPUT in names and OUTPUT not in self.paths
        self._wanted = {n for n in names if not (n == OUTPUT and wants_output)}
        self._stop_early = not wants_output
        self._record, self._versions, self._calls = {}, {}, {}
        self._input_hw = (int(x.shape[-2]), int(x.shape[-1]))
        try:
            output = self.model(x) if self._wanted != set() or wants_output else None
        except _Stop:
            output = None
        finally:
            self._wanted = set()
        record, self._record = self._record, {}
        missing = [n for n in names if n not in record and not (n == OUTPUT and wants_output)]
        if missing:
            raise FeatureError(f"{self.label}: no output was recorded for {', '.join(missing)} "
                               f"(module {', '.join(repr(self.paths[n]) for n in missing)} did not run in the "
                               "forward pass: a container such as a ModuleList is never called; name a module "
                               "inside it, e.g. '<path>.0')")
        for n, (path, tensor, version) in self._versions.items():
            if version is not None and tensor._version != version:
                raise FeatureError(f"{self.label}: the output of module '{path}' (feature '{n}') is changed in place "
                                   "later in the forward pass (an in-place activation?); name the module after it")
        self._versions = {}
        if wants_output:
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise FeatureError(f"{self.label}: the model's output is not a (B, classes, H, W) map; name the "
                                   "module that returns the logits as feature 'logits'")
            record[OUTPUT] = output
        return record

    def describe(self, size: int, names=None) -> FeatureSpecs:
        """Channels, size, stride and grid offset of each feature for a ``size`` x ``size`` input, measured
        from a forward pass on a probe input (in eval mode, without gradients), in forward order."""
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        was_training = self.model.training
        try:
            self.model.eval()
            with torch.no_grad():
                x = torch.zeros(1, self.in_channels, size, size, device=device)
                feats = self(x.contiguous(), names)
        except FeatureError:
            raise
        except Exception as exc:  # the network's own error for this input (size, channels, dims)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise FeatureError(f"{self.label}: a forward pass on a {size}x{size} probe with {self.in_channels} "
                               f"channel(s) fails: {first}") from None
        finally:
            self.model.train(was_training)
        specs = {}
        for name, value in feats.items():
            c, h, w = (int(v) for v in value.shape[1:])
            if size % h or size % w or h != w:
                raise FeatureError(f"{self.label}: feature '{name}' is {h}x{w} on a {size}x{size} input, not a "
                                   "grid of whole strides")
            stride = size / h
            specs[name] = Feature(c, h, w, stride, stride / 2 if self.grid == "centred" else 0.5)
        return specs


def table(specs: FeatureSpecs, paths: dict[str, str]) -> str:
    """The features as a text table: name, module path, channels, size, stride, offset."""
    rows = [("name", "module", "channels", "size", "stride", "offset")]
    for name, f in specs.items():
        rows.append((name, paths.get(name, "(output)"), str(f.channels), f"{f.height}x{f.width}",
                     f"{f.stride:g}", f"{f.offset:g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)
