"""The interface every backbone family implements, and the registry that finds one for a model.

A family is the only code that knows a model's attribute names and tensor layouts. Strategies
talk to blocks only through these methods, so adding a family is one file plus one import line.
"""

from __future__ import annotations

import inspect
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from adaptkit.errors import UnsupportedBackboneError, retyped
from adaptkit.layers.attention import AttentionProjections, frame_self_attention

INJECTED_MARKER = "_adaptkit_injected"
"""Attribute set on a backbone while it belongs to a VideoModel, so injecting twice fails clearly."""

SpatialContext = dict[str, Any]
"""Keyword arguments a family's spatial attention needs (RoPE tables, shared relative bias...)."""


class ChainedBlocks(Sequence[nn.Module]):
    """A flat, depth-ordered view over the block containers of several stages; indexable and assignable.

    Hierarchical families (Swin) keep one container per stage, while strategies select blocks by
    depth index (``layers``) and wrap them in place: ``view[i] = m`` writes into the container that
    holds block ``i``.
    """

    def __init__(self, containers: Sequence[nn.ModuleList | nn.Sequential]) -> None:
        self._slots = [(container, j) for container in containers for j in range(len(container))]

    def __len__(self) -> int:
        return len(self._slots)

    def __getitem__(self, index: int) -> nn.Module:  # type: ignore[override]
        container, j = self._slots[operator.index(index)]
        return container[j]

    def __setitem__(self, index: int, module: nn.Module) -> None:
        container, j = self._slots[operator.index(index)]
        container[j] = module

    def __iter__(self) -> Iterator[nn.Module]:
        return (container[j] for container, j in self._slots)


Blocks = nn.ModuleList | nn.Sequential | ChainedBlocks
"""What ``BackboneFamily.blocks()`` returns: every block in depth order, indexable and assignable."""

RunBlock = Callable[[int, torch.Tensor, SpatialContext], torch.Tensor]
"""``run_block(index, x, spatial)``: runs block ``index`` of ``blocks()``, wrapped or not."""


class LinearSite(NamedTuple):
    """One frozen affine map ``y = x @ weight.T + bias``, named by the module owning it and its attributes."""

    module: nn.Module
    weight: str
    bias: str | None


class BlockLinears(NamedTuple):
    """A pre-norm block's frozen affine maps, in the order they are applied.

    ``attn_in`` reads the normed tokens (the packed q/k/v projection), ``attn_out`` writes the
    attention branch (before any layer scale), ``mlp_in`` and ``mlp_out`` are the MLP's first and last
    linear layers. A linear map placed just before an ``*_in`` or just after an ``*_out`` site folds
    into it exactly.
    """

    attn_in: LinearSite
    attn_out: LinearSite
    mlp_in: LinearSite
    mlp_out: LinearSite


class BackboneFamily(ABC):
    """Everything adaptkit knows about one family of image transformers.

    An instance wraps one image model (its visual tower) and answers three kinds of questions:
    model level (embedding, blocks, pooling, which modules are the image head), block level
    (norm / attention / MLP pieces of one block so the attention can be re-applied to any
    batch-first token sequence, spatial or temporal), and bookkeeping (identity, normalisation).

    Token layout inside the blocks is (B*T, *tokens, D): frames are folded into the batch.
    """

    name: ClassVar[str]
    """Registry key, e.g. ``"timm_vit"``."""
    description: ClassVar[str]
    """Human-readable list of the model classes this family accepts (for error messages)."""
    hierarchical: ClassVar[bool] = False
    """Stages of different token widths with downsampling between them (Swin). Strategies written
    for one stack of same-width blocks (``timesformer``) refuse such families."""
    temporal_embedding: ClassVar[bool] = True
    """Whether temporal strategies add a learned absolute temporal embedding after :meth:`embed`.
    Families whose temporal attention has its own relative temporal bias (Swin, as in the AIM
    reference) set False: frame order then comes from that bias alone."""

    def __init__(self, image_model: nn.Module) -> None:
        self.image_model = image_model
        self.model = self.visual_tower(image_model)
        if getattr(self.model, INJECTED_MARKER, False):
            raise TypeError(
                "this image model was already injected (it is the backbone of a VideoModel); "
                "call video_model.unload() first to get the image model back"
            )
        self.validate()

    # ----------------------------------------------------------------- model level
    @classmethod
    @abstractmethod
    def matches(cls, image_model: nn.Module) -> bool:
        """Whether this family handles ``image_model``."""

    @classmethod
    def visual_tower(cls, image_model: nn.Module) -> nn.Module:
        """The module that becomes ``video_model.backbone`` (e.g. ``clip.visual``)."""
        return image_model

    def validate(self) -> None:
        """Raise if this particular model uses a feature adaptkit cannot adapt."""

    def require_attention(self, *classes: type[nn.Module]) -> None:
        """Refuse blocks whose attention is not exactly one of ``classes``.

        Temporal strategies re-apply a block's attention through :meth:`attention_projections`, which
        models these classes' maths only; a subclass or another attention (timm's ``DiffAttention``)
        would run with the wrong maths and no error.

        Raises:
            TypeError: naming the attention classes found and the ones supported.
        """
        found = {type(self.attention(block)) for block in self.blocks()} - set(classes)
        if found:
            raise TypeError(
                f"{self.name} with attention {sorted(c.__name__ for c in found)} is not supported: adaptkit re-applies "
                f"a block's attention over time only for {sorted(c.__name__ for c in classes)}"
            )

    @property
    @abstractmethod
    def embed_dim(self) -> int:
        """Width D of the pooled features (the token width; the last stage's for hierarchical families)."""

    @abstractmethod
    def blocks(self) -> Blocks:
        """Every transformer block in depth order (indexable and assignable; a :class:`ChainedBlocks`
        view for families that keep blocks in stages)."""

    def forward_blocks(self, x: torch.Tensor, spatial: SpatialContext, run_block: RunBlock) -> torch.Tensor:
        """Run every block in depth order through ``run_block(index, x, spatial)``.

        The default suits a single stack of blocks. Families with stages override it to put
        their downsampling between stages (and may pass a per-stage spatial context).
        """
        for index in range(len(self.blocks())):
            x = run_block(index, x, spatial)
        return x

    def temporal_block_choices(self) -> dict[str, list[int]]:
        """Named sets of block indices that may get temporal attention; the first is the default.

        Empty (the default) when there is nothing to choose: every adapted block gets it. Swin
        offers ``"unshifted"`` (the AIM paper: its regular-window blocks) and ``"all"``.
        """
        return {}

    @abstractmethod
    def check_frame_size(self, height: int, width: int) -> None:
        """Raise :class:`~adaptkit.errors.VideoInputError` (a ValueError) naming the valid sizes if frames of this
        size cannot be embedded."""

    @abstractmethod
    def embed(self, frames: torch.Tensor) -> tuple[torch.Tensor, SpatialContext]:
        """Frames (B*T, C, H, W) -> tokens (B*T, *tokens, D) with the spatial position embedding.

        Stops before the pre-norm, which is where the temporal embedding is added.
        """

    @abstractmethod
    def pre_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The norm (if any) between the embedding and the first block."""

    @abstractmethod
    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the last block -> (B*T, D): final norm and the model's own pooling."""

    @abstractmethod
    def head_paths(self) -> list[str]:
        """Attribute paths (on the visual tower) of image-only output layers a video model drops."""

    @abstractmethod
    def final_norm_paths(self) -> list[str]:
        """Attribute paths of the final norm(s) that AIM trains (as copies)."""

    @abstractmethod
    def lora_targets(self) -> list[str]:
        """Default PEFT ``target_modules`` for LoRA on this family."""

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) the backbone expects its inputs normalised with."""
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        return mean, std

    def input_size(self) -> tuple[int, int] | None:
        """(H, W) of the frames the backbone was built for (timm ``patch_embed.img_size``, open_clip
        ``image_size``), or None where the model does not say. Override for a family of one's own."""
        size = getattr(getattr(self.model, "patch_embed", None), "img_size", None) or getattr(
            self.model, "image_size", None)
        if size is None:
            return None
        return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def identity(self) -> dict[str, Any]:
        """The architecture, as recorded in checkpoints so that a loader can refuse another one.

        Family, class and timm / open_clip model name where known, the MLP activation and the norm
        (with its eps) of the first block, patch and input size, token widths, heads and depth: what
        decides the function an adapter was trained on, beyond the tensor shapes (a QuickGELU and a
        GELU CLIP have the same shapes and different outputs).
        """
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        blocks = list(self.blocks())
        block = getattr(blocks[0], "block", blocks[0])  # unwrapped, also while injected
        size = self.input_size()
        return {
            "family": self.name,
            "class": type(self.model).__name__,
            "architecture": cfg.get("architecture"),  # timm's model name; open_clip models do not record theirs
            "activation": _describe_activation(getattr(block, "mlp", block)),
            "norm": _describe_norm(block),
            "patch_size": list(self.patch_size) if self.patch_size is not None else None,
            "image_size": list(size) if size is not None else None,
            "embed_dim": self.embed_dim,
            "widths": sorted({self.block_dim(getattr(b, "block", b)) for b in blocks}),
            "num_heads": sorted({self.num_heads(getattr(b, "block", b)) for b in blocks}),
            "depth": len(blocks),
            "prefix_tokens": self.num_prefix_tokens,
            "pooling": self.pooling,
            "tensors": self.tensor_layout(),
        }

    @property
    def pooling(self) -> str | None:
        """How a frame's tokens become one vector (timm's ``global_pool``, open_clip's ``pool_type``)."""
        pool = getattr(self.model, "global_pool", None)
        return pool if isinstance(pool, str) else None

    def tensor_layout(self) -> list[str]:
        """The frozen image model's tensors as ``"blocks.*.attn.q_norm.weight (16,)"``, sorted.

        Block indices are folded to ``*`` and the image head left out, so the list is short and names
        what options such as register tokens, q/k norms, layer scale or a pre-norm add; two models
        with the same list have the same tensors, which the other identity keys cannot tell apart.
        """
        heads = self.head_paths()  # a module ("head": "head.weight") or a bare parameter (open_clip's "proj")
        entries = set()
        for name, tensor in self.model.state_dict(keep_vars=True).items():
            if not any(name == path or name.startswith(f"{path}.") for path in heads):
                folded = ".".join("*" if part.isdigit() else part for part in name.split("."))
                entries.add(f"{folded} {tuple(tensor.shape)}")
        return sorted(entries)

    @property
    def num_prefix_tokens(self) -> int:
        """Class / register / distillation tokens in front of the patch tokens (timm's ``num_prefix_tokens``)."""
        return int(getattr(self.model, "num_prefix_tokens", 1))

    @property
    def patch_size(self) -> tuple[int, int] | None:
        """Patch size (h, w) in pixels: the patch embedding's, else the first convolution's kernel."""
        size = getattr(getattr(self.model, "patch_embed", None), "patch_size", None)
        if isinstance(size, (tuple, list)):
            return int(size[0]), int(size[1])
        conv = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
        return None if conv is None else (int(conv.kernel_size[0]), int(conv.kernel_size[1]))

    def patch_grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (h, w) of a frame of ``height`` x ``width`` pixels (padded to whole patches if the model pads).

        timm's patch embeddings compute it themselves (a hybrid ViT's CNN stem reduces the frame before
        its patches are cut); otherwise it is the first convolution's stride, the patch embedding.
        """
        feat_size = getattr(getattr(self.model, "patch_embed", None), "dynamic_feat_size", None)
        if callable(feat_size):
            h, w = feat_size((height, width))
            return int(h), int(w)
        conv = next(m for m in self.model.modules() if isinstance(m, nn.Conv2d))  # the patch embedding
        sh, sw = conv.stride
        return -(-height // sh), -(-width // sw)

    def split_grid(self, x: torch.Tensor, spatial: SpatialContext) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Tokens (B*T, *tokens, D) -> (prefix tokens (B*T, P, D) or None, patch grid (B*T, h, w, D)).

        Channels-last token maps (Swin: (B*T, H, W, C)) are a grid already. Sequences (B*T, P + h*w, D)
        take the grid size from ``spatial["grid"]``, which the video model records after :meth:`embed`.
        """
        if x.dim() == 4:
            return None, x
        prefix = self.num_prefix_tokens
        return x[:, :prefix], x[:, prefix:].unflatten(1, spatial["grid"])  # (B*T, h*w, D) -> (B*T, h, w, D)

    def add_to_grid(self, x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """``x`` with ``update`` (B*T, h, w, D) added to its patch tokens; prefix tokens pass unchanged.

        An addition rather than a concatenation, so the result keeps ``x``'s memory layout (a later
        reduction over tokens then sums in the same order as in the image model: exact identity).
        """
        if x.dim() == 4:
            return x + update
        return x + F.pad(update.flatten(1, 2), (0, 0, self.num_prefix_tokens, 0))  # zeros on the prefix tokens

    # ----------------------------------------------------------------- block level
    def block_dim(self, block: nn.Module) -> int:
        """Token width inside ``block`` (it changes from stage to stage in hierarchical families)."""
        return self.embed_dim

    @abstractmethod
    def block_forward(self, block: nn.Module, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
        """The block's own, unmodified forward."""

    @abstractmethod
    def norm1(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The pre-attention norm."""

    def num_heads(self, block: nn.Module) -> int:
        """Attention heads of ``block``, recorded in checkpoints (the head count changes the function, not the
        shapes). Defaults to the attention module's ``num_heads`` (timm, ``nn.MultiheadAttention``).

        Raises:
            TypeError: the attention has no ``num_heads``; a family naming it otherwise overrides this.
        """
        heads = getattr(self.attention(block), "num_heads", None)
        if not isinstance(heads, int):
            raise TypeError(f"{self.name}: {type(self.attention(block)).__name__} has no num_heads; override "
                            f"{type(self).__name__}.num_heads to give the head count")
        return heads

    def norm1_module(self, block: nn.Module) -> nn.Module:
        """The module :meth:`norm1` applies, for strategies that need a trainable copy of it (``timesformer``).

        Defaults to the block's ``norm1`` (timm) or ``ln_1`` (open_clip) attribute.

        Raises:
            TypeError: neither exists; a family whose norm is named otherwise overrides this.
        """
        for name in ("norm1", "ln_1"):
            module = getattr(block, name, None)
            if isinstance(module, nn.Module):
                return module
        raise TypeError(f"{self.name}: cannot find the pre-attention norm of {type(block).__name__} (no norm1 or "
                        f"ln_1); override {type(self).__name__}.norm1_module to name it")

    @abstractmethod
    def attention(self, block: nn.Module) -> nn.Module:
        """The block's attention module."""

    @abstractmethod
    def attend(self, attn: nn.Module, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
        """The attention module's own spatial self-attention over the sequences of ``x`` (S, L, D).

        Position machinery (RoPE, relative position bias) comes from ``spatial``.
        """

    @abstractmethod
    def attention_projections(self, attn: nn.Module, spatial: SpatialContext | None = None) -> AttentionProjections:
        """The q/k/v projection hook: ``attn`` as per-token projections for the shared attention layers.

        ``qkv(x)`` maps tokens (*, D) to packed q/k/v (*, 3, heads, head_dim) exactly as the module
        computes them (fused or separate projections, q/v biases, q/k norms, cosine normalisation
        with its logit scale); ``out(values, x)`` applies what follows the attention (scale norm,
        gate, output projection). With ``spatial=None`` (attention over time) no spatial position
        machinery is included; with a spatial context, ``qkv`` applies the rotary embedding and
        ``bias`` holds the relative position bias, so that
        :func:`adaptkit.layers.attention.self_attention` reproduces :meth:`attend`.

        Strategies that need q/k/v inside the frozen attention (e.g. heads whose keys and values
        come from other frames) build on this hook.

        Raises:
            TypeError: for a spatial context the family cannot express per token (Swin's windows).
        """

    @abstractmethod
    def scale1(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        """Layer scale of the attention branch (identity when the block has none)."""

    @abstractmethod
    def drop_path1(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        """The block's own stochastic depth on the attention branch."""

    @abstractmethod
    def norm2(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The pre-MLP norm."""

    @abstractmethod
    def mlp(self, block: nn.Module, xn: torch.Tensor) -> torch.Tensor:
        """The MLP branch including its layer scale."""

    @abstractmethod
    def drop_path2(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        """The block's own stochastic depth on the MLP branch."""

    def attend_space(self, block: nn.Module, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
        """The block's own spatial attention on normed tokens (B*T, *tokens, D).

        Defaults to :meth:`attend` on the block's attention module; families whose attention needs
        the block (Swin: window partition, cyclic shift and mask) override it.
        """
        return self.attend(self.attention(block), x, spatial)

    def linear_layers(self, block: nn.Module) -> BlockLinears | None:
        """The frozen affine maps around a block's two branches, for strategies that fold linear adapters into them.

        None (the default) where the family does not describe them; strategies that merge adapters
        then refuse the family in ``check_backbone``.
        """
        return None

    def new_temporal_bias(self, block: nn.Module, num_frames: int) -> nn.Module | None:
        """A new, trainable relative temporal position bias for temporal attention in ``block``.

        None (the default) where frame order comes from the model-level temporal embedding.
        """
        return None

    def attend_frames(
        self, attn: nn.Module, x: torch.Tensor, num_frames: int, bias: torch.Tensor | None = None, *,
        tail: Callable[[torch.Tensor], torch.Tensor] | None = None, recompute: bool = False,
    ) -> torch.Tensor:
        """Self-attention of ``attn`` over the frames of frame-folded tokens (B*T, *tokens, D).

        Token n of frame t attends to token n of every frame of its clip; no spatial position
        machinery. ``bias`` is an optional additive (heads, T, T) bias; ``tail`` a per-token map
        applied to the result and ``recompute`` keeps only q/k/v for the backward pass. Tokens are
        not regrouped: see :func:`adaptkit.layers.attention.frame_self_attention`.
        """
        return frame_self_attention(self.attention_projections(attn), x, num_frames, bias, tail=tail,
                                    recompute=recompute)

    def attend_time(
        self, block: nn.Module, x: torch.Tensor, num_frames: int, bias: nn.Module | None = None, *,
        tail: Callable[[torch.Tensor], torch.Tensor] | None = None, recompute: bool = False,
    ) -> torch.Tensor:
        """The block's own attention over time on frame-folded normed tokens (B*T, *tokens, D).

        ``bias`` is what :meth:`new_temporal_bias` made (called with ``num_frames``), or None;
        ``tail`` and ``recompute`` as in :meth:`attend_frames`.
        """
        table = None if bias is None else bias(num_frames)  # (heads, T, T)
        return self.attend_frames(self.attention(block), x, num_frames, table, tail=tail, recompute=recompute)

    def new_temporal_attention(self, block: nn.Module) -> nn.Module:
        """A fresh attention module initialised from the block's, for divided space-time attention."""
        import copy

        return copy.deepcopy(self.attention(block))


def _describe_activation(mlp: nn.Module) -> str | None:
    """Class name of the MLP's activation (the first parameter-free leaf that is not dropout or identity)."""
    for module in mlp.modules():
        if next(module.children(), None) is None and next(module.parameters(), None) is None:
            name = type(module).__name__
            if name not in ("Dropout", "Identity", "DropPath"):
                approximate = getattr(module, "approximate", "none")
                return name if approximate == "none" else f"{name}(approximate={approximate!r})"
    return None


def _describe_norm(block: nn.Module) -> str | None:
    """The first norm of a block with its eps, e.g. ``LayerNorm(eps=1e-06)``."""
    for module in block.modules():
        if "Norm" in type(module).__name__:
            return f"{type(module).__name__}(eps={getattr(module, 'eps', None)})"
    return None


_FAMILIES: list[type[BackboneFamily]] = []


def register_backbone(cls: type[BackboneFamily]) -> type[BackboneFamily]:
    """Class decorator adding a family to the registry; usable from your own module.

    :func:`find_family` asks the families newest first, so a family registered after the built-in ones (yours)
    takes precedence for the models its ``matches`` accepts. The class must subclass :class:`BackboneFamily`,
    implement every abstract member, and set ``name`` (a str) and ``description``.

    Raises:
        TypeError: a class that is not such a subclass, leaves members abstract, or lacks ``name`` / ``description``.
        ValueError: ``name`` is already registered.
    """
    problems = []
    if not (isinstance(cls, type) and issubclass(cls, BackboneFamily)):
        problems.append("it does not subclass adaptkit.BackboneFamily")
    elif inspect.isabstract(cls):
        problems.append(f"it leaves {sorted(cls.__abstractmethods__)} abstract")
    for attribute in ("name", "description"):
        if not isinstance(getattr(cls, attribute, None), str) or not getattr(cls, attribute):
            problems.append(f"its {attribute} is not a non-empty str")
    if problems:
        raise TypeError(f"cannot register backbone family {getattr(cls, '__name__', cls)!r}: {'; '.join(problems)}")
    if any(f.name == cls.name for f in _FAMILIES):
        raise ValueError(f"backbone family {cls.name!r} is already registered; choose another name")
    _FAMILIES.append(cls)
    return cls


def list_backbones() -> list[str]:
    """Names of the registered backbone families."""
    return [f.name for f in _FAMILIES]


def find_family(image_model: nn.Module) -> BackboneFamily:
    """The family handling ``image_model``, instantiated on it.

    Raises:
        UnsupportedBackboneError: (a TypeError and ValueError) no registered family supports the model (the
            message names them, and how to unwrap a compiled, data-parallel or PEFT model), or its family refuses
            one of its features.
    """
    for family in reversed(_FAMILIES):  # newest first: a user's family overrides a built-in one it overlaps
        if family.matches(image_model):
            with retyped(UnsupportedBackboneError):
                return family(image_model)  # validate() refuses features it cannot adapt
    raise UnsupportedBackboneError(
        f"adaptkit cannot adapt a {type(image_model).__module__}.{type(image_model).__name__}"
        f"{_wrapper_hint(image_model)}; supported backbone families: {', '.join(list_backbones())} "
        f"(adaptkit.list_backbones())"
    )


def _wrapper_hint(model: nn.Module) -> str:
    """How to get the image model out of a wrapper that hides it, or nothing."""
    if isinstance(getattr(model, "_orig_mod", None), nn.Module):
        return " (a torch.compile wrapper: inject model._orig_mod, then compile the video model)"
    parallel = type(model).__name__ in ("DataParallel", "DistributedDataParallel")
    if parallel and isinstance(getattr(model, "module", None), nn.Module):
        return " (a data-parallel wrapper: inject model.module, then wrap the video model)"
    if callable(getattr(model, "get_base_model", None)):
        return " (a PEFT model: inject the plain image model; strategy='lora' applies LoRA through PEFT)"
    return ""
