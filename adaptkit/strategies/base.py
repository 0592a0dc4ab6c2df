"""Strategy configs, their registry, and the wrapper that video-aware blocks share."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
import torch.utils.checkpoint
from torch import nn

from adaptkit.backbones.base import BackboneFamily
from adaptkit.errors import StrategyOptionError, retyped


@dataclasses.dataclass(frozen=True)
class StrategyContext:
    """Everything a strategy may touch while it adapts, merges or removes itself.

    This is the whole surface a strategy sees of the video model: it never imports
    :class:`~adaptkit.VideoModel` or reads its private state.

    Attributes:
        family: The backbone family (the only code that knows the block layout).
        backbone: The image model being adapted (its visual tower); every parameter is frozen on entry.
        num_frames: The clip length T the video model is built for.
    """

    family: BackboneFamily
    backbone: nn.Module
    num_frames: int
    _train_copy_of: Callable[[str], nn.Module] = dataclasses.field(repr=False)

    def train_copy_of(self, path: str) -> nn.Module:
        """Replace the frozen backbone module at ``path`` (e.g. ``"norm"``) by a trainable copy and return it.

        ``unload()`` puts the original back.
        """
        return self._train_copy_of(path)


@dataclasses.dataclass
class StrategyConfig(ABC):
    """Base of every strategy's options. Subclasses are dataclasses registered by name.

    Values are checked when the config is built, so a typo or an out-of-range value fails
    before any model surgery happens.
    """

    name: ClassVar[str]
    temporal_embedding: ClassVar[bool] = False
    """Whether the video model gets a learned temporal position embedding."""
    mergeable: ClassVar[bool] = False
    merge_refusal: ClassVar[str] = "its trainable modules are not linear maps next to a frozen linear layer"
    """Why :meth:`merge` refuses, for strategies that are not :attr:`mergeable`."""
    """Whether :meth:`merge` can fold the strategy's trainable modules into the frozen weights."""

    head_dropout: float = 0.5
    """Dropout before the classification head (the AIM reference uses 0.5)."""

    def __post_init__(self) -> None:
        check_range(self, "head_dropout", 0.0, 1.0, high_inclusive=False)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for an invalid combination of options."""

    def check_backbone(self, family: BackboneFamily) -> None:
        """Raise if this strategy cannot be applied to ``family``; called before any model surgery."""

    @abstractmethod
    def apply(self, context: StrategyContext) -> Any:
        """Modify ``context.backbone`` in place and mark what trains.

        On entry every backbone parameter is frozen; the head and temporal embedding train.

        Returns:
            Whatever :meth:`remove` (and :meth:`merge`) will need to undo the surgery; the video
            model keeps it and hands it back. None when wrapping blocks in :class:`VideoBlock` and
            ``context.train_copy_of`` is all the strategy does (the video model undoes those itself);
            such a strategy, training no original backbone weight, can also be one of several adapter
            sets on a backbone (``VideoModel.add_adapter``). If ``apply`` raises, it must leave nothing
            of its own behind; tensors it adds to the backbone, :meth:`remove` must delete.
        """

    def remove(self, context: StrategyContext, state: Any) -> None:
        """Undo the structural changes of :meth:`apply`, given what it returned.

        :class:`VideoBlock` wrappers and trainable copies are undone by the video model afterwards.
        """

    def merge(self, context: StrategyContext, state: Any) -> tuple[Any, Callable[[], None]]:
        """Fold the trainable modules into the frozen weights, in place (only if :attr:`mergeable`).

        Called by :meth:`VideoModel.merge <adaptkit.VideoModel.merge>`, which checks the result on a
        probe batch and calls the returned ``undo`` to refuse a merge that changed the outputs.

        Returns:
            ``(merged_state, undo)``: the state :meth:`remove` will get from now on, and a function
            restoring the exact pre-merge model (it may keep the replaced tensors alive until dropped).

        Raises:
            TypeError: the strategy cannot be merged.
        """
        raise TypeError(
            f"strategy {self.name!r} cannot be merged into the frozen weights: {self.merge_refusal}. Mergeable "
            f"strategies: "
            f"{', '.join(n for n, c in _STRATEGIES.items() if c.mergeable) or 'none'}"
        )

    def wrapped_modules(self, state: Any) -> dict[str, nn.Module]:
        """Modules this strategy put in place by name (``name -> wrapper``), given what :meth:`apply` returned.

        After :meth:`apply`, the video model runs one tiny forward and backward and refuses the
        strategy unless every wrapper listed here is called and its trainable tensors change the
        output: a target the model never calls (e.g. a projection whose weight the attention reads
        directly) would otherwise train nothing, silently. Strategies that wrap whole blocks need not list them.
        """
        return {}

    def working_targets(self, family: BackboneFamily) -> str:
        """A sentence on what to do when :meth:`wrapped_modules` finds a module that does nothing (e.g. the family's
        working targets); empty for none."""
        return ""

    def options(self) -> dict[str, Any]:
        """The options as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


def check_range(
    config: object, field: str, low: float, high: float, *, high_inclusive: bool = True, low_inclusive: bool = True
) -> None:
    """Refuse option ``field`` of a strategy config unless it is a finite number in [low, high] (``low_inclusive`` /
    ``high_inclusive`` False: open at that end, e.g. (0, 1] for a ratio that needs at least one hidden unit).

    Raises:
        StrategyOptionError: (a ValueError) naming the strategy, the option, its value and the range.
    """
    value = getattr(config, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StrategyOptionError(f"{type(config).name} option {field!r} must be a number, got {value!r}")
    upper_ok = value <= high if high_inclusive else value < high
    lower_ok = low <= value if low_inclusive else low < value
    if not (lower_ok and upper_ok):
        interval = f"{'[' if low_inclusive else '('}{low:g}, {high:g}{']' if high_inclusive else ')'}"
        raise StrategyOptionError(f"{type(config).name} option {field}={value!r} is out of range {interval}")


def check_bool(config: object, *fields: str) -> None:
    """Refuse options ``fields`` of a strategy config unless each is True or False (not 0/1 or a string).

    Raises:
        StrategyOptionError: (a ValueError) naming the strategy, the option and its value.
    """
    for field in fields:
        value = getattr(config, field)
        if not isinstance(value, bool):
            raise StrategyOptionError(f"{type(config).name} option {field!r} must be True or False, got {value!r}")


_STRATEGIES: dict[str, type[StrategyConfig]] = {}


def register_strategy(cls: type[StrategyConfig]) -> type[StrategyConfig]:
    """Class decorator adding a strategy to the registry under ``cls.name``; usable from your own module.

    The class must subclass :class:`StrategyConfig`, be a ``@dataclasses.dataclass`` (its fields are the options
    ``inject`` accepts; put ``@register_strategy`` above ``@dataclass``), set ``name`` (a str), and implement
    ``apply``. Check option values in ``validate()`` (``check_range`` / ``check_bool`` from
    ``adaptkit.strategies``). A process that loads a checkpoint of it must have imported the module first
    (the recipes: list it in the config's ``imports``).

    Raises:
        TypeError: a class that is not such a dataclass subclass, leaves ``apply`` abstract, or whose ``name`` is
            not a non-empty str.
        ValueError: ``name`` is already registered (built-in names included).
    """
    name = getattr(cls, "name", None)
    problems = []
    if not (isinstance(cls, type) and issubclass(cls, StrategyConfig)):
        problems.append("it does not subclass adaptkit.StrategyConfig")
    elif not dataclasses.is_dataclass(cls) or "__dataclass_fields__" not in cls.__dict__:
        problems.append("it is not itself a @dataclasses.dataclass (write @register_strategy above @dataclass), so its "
                        "fields would not be options")
    elif inspect.isabstract(cls):
        problems.append(f"it leaves {sorted(cls.__abstractmethods__)} abstract")
    elif "name" in {field.name for field in dataclasses.fields(cls)}:
        problems.append("its name is a dataclass field (an option inject() could rename it with); write it without "
                        "a type annotation: name = '...'")
    if not isinstance(name, str) or not name:
        problems.append(f"its name is {name!r}, not a non-empty str")
    if problems:
        raise TypeError(f"cannot register strategy {getattr(cls, '__name__', cls)!r}: {'; '.join(problems)}")
    if name in _STRATEGIES:
        raise ValueError(f"strategy {name!r} is already registered (by {_STRATEGIES[name].__module__}); "
                         "choose another name")
    _STRATEGIES[name] = cls
    return cls


def list_strategies() -> list[str]:
    """Names of the registered strategies."""
    return list(_STRATEGIES)


def make_strategy(name: str, options: dict[str, Any]) -> StrategyConfig:
    """Build and validate the config of strategy ``name``.

    Raises:
        StrategyOptionError: (a ValueError and TypeError) unknown strategy (the message lists the registered ones),
            unknown option (the message lists the valid ones) or invalid value.
    """
    if name not in _STRATEGIES:
        raise StrategyOptionError(f"unknown strategy {name!r}; registered strategies: {', '.join(_STRATEGIES)} (a "
                                  "strategy of your own is registered when the module defining it is imported)")
    cls = _STRATEGIES[name]
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise StrategyOptionError(f"unknown option(s) {unknown} for strategy {name!r}; valid options: "
                                  f"{', '.join(valid)}")
    with retyped(StrategyOptionError):
        return cls(**options)  # validate() checks the values


class VideoBlock(nn.Module):
    """A wrapper around one frozen image block that knows the clip length.

    Keeps the original block as ``self.block`` so unloading is putting it back. Called as
    ``block(x, spatial, num_frames)`` with ``x`` of shape (B*T, *tokens, D).

    Blocks with a temporal branch run it through :meth:`run_temporal`, so that
    ``VideoModel.set_grad_checkpointing("temporal")`` can have it recomputed in the backward pass.
    Cheap per-token parts (adapters, a norm feeding only an adapter) run through
    :meth:`run_recomputed`, which keeps only their inputs for the backward pass.
    """

    def __init__(self, block: nn.Module, family: BackboneFamily) -> None:
        super().__init__()
        self.block = block
        # A plain attribute, not a submodule: the family is stateless glue, not part of the model.
        self.family = family
        self.checkpoint_temporal = False
        """Recompute the temporal branch in the backward pass instead of keeping its activations."""
        self.recompute_adapters = True
        """Recompute the cheap parts given to :meth:`run_recomputed` in the backward pass (off while the
        whole block is checkpointed, which recomputes them anyway)."""

    def run_temporal(self, branch: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        """``branch(*args)``, under activation checkpointing when ``checkpoint_temporal`` is set and autograd records.

        Only the branch's inputs are kept; its norm, projections, attention and adapters run again
        in the backward pass (random state included, so dropout draws the same masks).
        """
        if self.checkpoint_temporal and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(branch, *args, use_reentrant=False)
        return branch(*args)

    def run_recomputed(self, part: Callable[..., Any], *args: Any) -> Any:
        """``part(*args)``, keeping only ``args`` for the backward pass when ``recompute_adapters`` is set.

        For cheap per-token parts whose inputs autograd keeps anyway or that are small: an adapter's
        hidden activations, or a norm whose output only an adapter reads. ``torch.utils.checkpoint``
        recomputes them in the backward pass with the same operations, so outputs and gradients are
        bit-for-bit those of running ``part`` plainly.
        """
        if self.recompute_adapters and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(part, *args, use_reentrant=False)
        return part(*args)

    @contextlib.contextmanager
    def keep_as_sum(self, total: torch.Tensor, first: torch.Tensor, *terms: torch.Tensor) -> Iterator[None]:
        """While active, where autograd would keep ``total`` it keeps ``terms`` and rebuilds the sum in backward.

        For the residual stream under autocast: ``total = first + terms[0] + ...`` is float32, while the
        branch outputs in ``terms`` are bfloat16 (half the bytes) and ``first`` is kept anyway (the input
        of the block's first norm). The backward pass adds them again, left to right as the forward did,
        so it sees the same bits. Only with ``recompute_adapters`` set, outside ``torch.compile`` (which
        chooses what to keep itself), and when every term is narrower than ``total``.

        Raises:
            RuntimeError: in the backward pass, if a term was modified in place after the forward pass.
        """
        narrower = all(t.element_size() < total.element_size() for t in terms)
        if not (self.recompute_adapters and narrower and torch.is_grad_enabled()) or torch.compiler.is_compiling():
            yield
            return
        where = (total.untyped_storage()._cdata, total.storage_offset(), total.shape, total.stride(), total.dtype)
        # Hooks already active (an outer count, offloading) still see every kept tensor, the terms included.
        top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)  # private; absent: no composing
        outer = top(False) if top is not None else None
        outer_pack, outer_unpack = outer if outer is not None else (None, None)
        parts = (first, *terms)

        def pack(t: torch.Tensor) -> Any:
            if (t.untyped_storage()._cdata, t.storage_offset(), t.shape, t.stride(), t.dtype) != where:
                return t if outer_pack is None else outer_pack(t)
            if outer_pack is None:
                return _Sum(parts, [p._version for p in parts])
            return _Sum(tuple(outer_pack(p) for p in parts), None, outer_unpack)

        def unpack(packed: Any) -> torch.Tensor:
            if isinstance(packed, _Sum):
                return packed.rebuild()
            return packed if outer_unpack is None else outer_unpack(packed)

        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield


class _Sum:
    """A kept tensor stored as the terms of the sum that made it (see ``VideoBlock.keep_as_sum``)."""

    def __init__(self, parts: tuple[Any, ...], versions: list[int] | None,
                 unpack: Callable[[Any], torch.Tensor] | None = None) -> None:
        self.parts, self.versions, self.unpack = parts, versions, unpack

    def rebuild(self) -> torch.Tensor:
        parts = [self.unpack(p) for p in self.parts] if self.unpack is not None else list(self.parts)
        if self.versions is not None and [p._version for p in parts] != self.versions:
            raise RuntimeError("a tensor kept as a sum for the backward pass was modified in place")
        with torch.no_grad():
            total = parts[0]
            for part in parts[1:]:
                total = total + part
        return total


LayersSpec = str | list[int] | tuple[int, ...]


def validate_layers_spec(layers: LayersSpec) -> None:
    """Check the syntax of a layers option before the depth is known (bounds are checked at apply)."""
    if isinstance(layers, (list, tuple)):
        if not layers or any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
            raise ValueError(f"layers must be a non-empty list of block indices, got {list(layers)}")
        return
    kind, _, count = str(layers).partition(":")
    if layers == "all" or (kind in ("top", "bottom", "every") and count.isdigit() and int(count) >= 1):
        return
    raise ValueError(
        f"layers={layers!r} is not understood; use 'all', 'top:N', 'bottom:N', 'every:N' or a list of block indices"
    )


def parse_layers(layers: LayersSpec, depth: int) -> list[int]:
    """Block indices selected by ``"all"``, ``"top:N"``, ``"bottom:N"``, ``"every:N"`` or a list.

    ``every:N`` takes blocks 0, N, 2N, ... (``every:2`` on 12 blocks is AIM's Table 7 "skip" row).
    """
    validate_layers_spec(layers)
    if isinstance(layers, (list, tuple)):
        bad = [i for i in layers if not -depth <= i < depth]
        if bad:
            raise ValueError(f"layers {bad} are out of range for a backbone with {depth} blocks")
        return sorted({i % depth for i in layers})
    if layers == "all":
        return list(range(depth))
    kind, _, count = layers.partition(":")
    n = int(count)
    if kind != "every" and n > depth:
        raise ValueError(f"layers={layers!r} asks for {n} blocks but the backbone has {depth}")
    if kind == "top":
        return list(range(depth - n, depth))
    if kind == "bottom":
        return list(range(n))
    return list(range(0, depth, n))


def drop_path_rates(max_rate: float, depth: int) -> list[float]:
    """Stochastic depth rising linearly from 0 at the first block to ``max_rate`` at the last."""
    if depth == 1:
        return [max_rate]
    return [max_rate * i / (depth - 1) for i in range(depth)]
