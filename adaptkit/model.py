"""``VideoModel``: an image backbone turned into a clip classifier by a strategy."""

from __future__ import annotations

import copy
import dataclasses
import operator
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.utils.checkpoint
from einops import rearrange
from torch import nn

from adaptkit.backbones.base import INJECTED_MARKER, BackboneFamily, SpatialContext
from adaptkit import adapter_sets, self_checks
from adaptkit import param_groups as groups
from adaptkit.errors import (  # noqa: F401  MergeError re-exported
    MergeError,
    UnloadedModelError,
    UnsupportedBackboneError,
    VideoInputError,
    retyped,
)
from adaptkit.layers import TemporalEmbedding
from adaptkit.self_checks import MERGE_TOLERANCE  # noqa: F401  re-exported
from adaptkit.strategies.base import StrategyConfig, StrategyContext, VideoBlock

@dataclasses.dataclass
class _Restore:
    """What ``unload()`` needs to give back the untouched image model. Not part of the module tree."""

    image_model: nn.Module
    requires_grad: dict[str, bool]
    parameter_order: dict[str, list[str]]  # module name -> its parameters' registration order
    modules: dict[str, nn.Module]  # module name -> the module itself (one a strategy replaced is put back)
    buffers: set[str]  # the backbone's own buffer names
    original_params: set[int]  # ids of the backbone's own parameters (trained in place by full finetuning)
    original_refs: list[nn.Parameter]  # keeps those parameters alive, so no new object is given one of their ids
    no_decay_params: set[int]  # ids of those the backbone itself exempts from weight decay (timm/open_clip)
    stashed: dict[str, Any] = dataclasses.field(default_factory=dict)  # path -> original module/parameter
    trainable_copies: list[str] = dataclasses.field(default_factory=list)  # paths given to train_copy_of
    strategy_state: Any = None  # what strategy.apply returned; handed back to remove()/merge()
    applied: bool = False  # strategy.apply returned (a failed apply cleans up after itself)


class VideoModel(nn.Module):
    """A video classifier built from an image transformer by :func:`adaptkit.inject`.

    Input is a float video of shape (B, C, T, H, W). Frames are folded into the batch, embedded
    by the image model, passed through its (possibly wrapped) blocks, pooled per frame, averaged
    over time and classified by a new linear head.

    A model built for T frames also accepts clips of another length T': a learned temporal
    embedding, where the strategy has one, is linearly interpolated from T to T'.

    Attributes:
        backbone: The adapted image model (its visual tower for open_clip CLIP models).
        family: The :class:`~adaptkit.backbones.BackboneFamily` that knows the backbone's layout.
        strategy: The strategy's validated config.
        num_frames: The clip length the model was built for.
        num_classes: Number of classes, or None when the model returns features.
        architecture: The backbone's identity, recorded in checkpoints and compared on load.
        merged: Whether :meth:`merge` folded the strategy into the frozen weights.
        active_adapter: The active adapter set's name (``"default"`` unless :meth:`add_adapter` added others).
        head: The new linear head (``nn.Identity`` without classes).
        temporal_embed: The learned temporal embedding (:class:`~adaptkit.layers.TemporalEmbedding`), or None
            where the strategy or family has none.
    """

    def __init__(
        self, family: BackboneFamily, strategy: StrategyConfig, num_frames: int, num_classes: int | None
    ) -> None:
        super().__init__()
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
        with retyped(UnsupportedBackboneError):
            strategy.check_backbone(family)  # before any surgery, so a refusal leaves the image model untouched
        self.family = family
        self.strategy = strategy
        self.num_frames = num_frames
        self.num_classes = num_classes
        self.backbone = family.model
        self.architecture = family.identity()  # before surgery: what checkpoints record and loaders compare
        self.in_channels = _patch_embed_channels(self.backbone)
        self_checks.check_family_hooks(family, self.in_channels)  # still before any surgery
        self._grad_checkpointing = False
        self.merged = False
        self.active_adapter = "default"
        """Name of the active adapter set (see :meth:`add_adapter`)."""
        self.adapter_sets = nn.ModuleDict()  # the inactive adapter sets' modules, by name
        self._set_info: dict[str, Any] = {}
        backbone_params = dict(self.backbone.named_parameters())
        no_decay_names = getattr(self.backbone, "no_weight_decay", None)
        no_decay_names = set(no_decay_names()) if callable(no_decay_names) else set()
        self._restore = _Restore(
            image_model=family.image_model,
            requires_grad={n: p.requires_grad for n, p in backbone_params.items()},
            parameter_order={n: list(m._parameters) for n, m in self.backbone.named_modules()},
            modules=dict(self.backbone.named_modules()),
            buffers={n for n, _ in self.backbone.named_buffers()},
            original_params={id(p) for p in backbone_params.values()},
            original_refs=list(backbone_params.values()),
            no_decay_params={id(p) for n, p in backbone_params.items() if n in no_decay_names},
        )
        self.backbone.requires_grad_(False)
        setattr(self.backbone, INJECTED_MARKER, True)
        try:
            self._build(family, strategy, num_frames, num_classes)
        except BaseException:
            self.unload()  # a failure half-way through surgery gives the image model back as it was
            raise
        # timm / open_clip keep the flag on the model (or a stage) and would checkpoint their own block loop,
        # which the video model does not run: the user's choice carries over to the video model's loop.
        if any(getattr(module, "grad_checkpointing", False) is True for module in self.backbone.modules()):
            self.set_grad_checkpointing(True)

    def _build(self, family: BackboneFamily, strategy: StrategyConfig, num_frames: int, num_classes: int | None) -> None:
        for path in family.head_paths():
            self._stash(path, replacement=None)
        self._build_set(strategy, num_classes)

    def _build_set(self, strategy: StrategyConfig, num_classes: int | None) -> None:
        """Apply ``strategy`` to the (plain, frozen) backbone with a new head: the active adapter set."""
        self.strategy, self.num_classes = strategy, num_classes
        family, num_frames = self.family, self.num_frames
        reference = next(self.backbone.parameters())
        dim = family.embed_dim
        # New modules are created where the backbone lives (meta included) and in its dtype.
        with torch.device(reference.device):
            use_temporal_embed = strategy.temporal_embedding and family.temporal_embedding
            self.temporal_embed = TemporalEmbedding(num_frames, dim) if use_temporal_embed else None
            self.head_drop = nn.Dropout(strategy.head_dropout)
            self.head = nn.Linear(dim, num_classes) if num_classes is not None else nn.Identity()
            if num_classes is not None:
                nn.init.normal_(self.head.weight, std=0.01)
                nn.init.zeros_(self.head.bias)
            self._restore.strategy_state = strategy.apply(self._context())
            self._restore.applied = True
        self.to(dtype=reference.dtype)
        # What this set saves, fixed now: a later freeze (from_pretrained, load_adapter) must not empty checkpoints.
        self._adapter_tensor_names = {name for name, p in self._active_parameters() if p.requires_grad}
        wrapped = strategy.wrapped_modules(self._restore.strategy_state)
        if wrapped:
            self._check_wrapped_modules_matter(wrapped)

    def _check_wrapped_modules_matter(self, wrapped: dict[str, nn.Module]) -> None:
        self_checks.check_wrapped_modules_matter(self, wrapped)

    def _context(self) -> StrategyContext:
        return StrategyContext(self.family, self.backbone, self.num_frames, self.train_copy_of)

    # ------------------------------------------------------------------ forward
    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """Video (B, C, T, H, W) -> (B, D): each frame's pooled token, averaged over time.

        Raises:
            VideoInputError: (a ValueError and TypeError) not a non-empty 5-D float tensor of the model's dtype
                (under autocast, float32 too) on the model's device, other channels than the patch embedding's, or a
                frame size the backbone cannot embed (the message names the valid sizes).
            UnloadedModelError: (a RuntimeError) the model was unloaded.
        """
        batch, _, num_frames, height, width = self._check_video(video)
        frames = rearrange(video, "b c t h w -> (b t) c h w")
        x, spatial = self.family.embed(frames)  # (B*T, *tokens, D)
        spatial = {**spatial, "grid": self.family.patch_grid(height, width)}  # for strategies working on the grid
        if self.temporal_embed is not None:
            x = self.temporal_embed(x, num_frames)
        x = self.family.pre_blocks(x)
        x = self._run_blocks(x, spatial, num_frames)
        pooled = self.family.pool(x)  # (B*T, D)
        if pooled.shape != (x.shape[0], self.family.embed_dim):  # a family of one's own that does not pool
            raise TypeError(f"backbone family {self.family.name!r}: pool() returned shape {tuple(pooled.shape)}, "
                            f"expected (B*T, embed_dim) = {(x.shape[0], self.family.embed_dim)}")
        return pooled.view(batch, num_frames, -1).mean(dim=1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Video (B, C, T, H, W) -> logits (B, num_classes), or features (B, D) without a head.

        Raises:
            VideoInputError, UnloadedModelError: as :meth:`forward_features`.
        """
        return self.head(self.head_drop(self.forward_features(video)))

    def _run_blocks(self, x: torch.Tensor, spatial: SpatialContext, num_frames: int) -> torch.Tensor:
        checkpointing = self._grad_checkpointing and torch.is_grad_enabled()
        blocks = self.family.blocks()

        def run_block(index: int, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
            block = blocks[index]
            if isinstance(block, VideoBlock):
                fn, args = block, (x, spatial, num_frames)
            else:
                fn, args = self.family.block_forward, (block, x, spatial)
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False) if checkpointing else fn(*args)

        # The family decides the order and what runs between blocks (Swin: downsampling between stages).
        return self.family.forward_blocks(x, spatial, run_block)

    def _require_loaded(self, action: str) -> None:
        """Refuse ``action`` once ``unload()`` has given the backbone back (one message for every entry point)."""
        if self._restore is None:
            raise UnloadedModelError(
                f"this VideoModel was unloaded (its backbone was given back as an image model); cannot {action}")

    def _check_video(self, video: torch.Tensor) -> tuple[int, int, int, int, int]:
        self._require_loaded("run a video")
        if not isinstance(video, torch.Tensor) or video.dim() != 5:
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise VideoInputError(f"expected a video tensor of shape (B, C, T, H, W), got {shape}")
        if not video.is_floating_point():
            raise VideoInputError(f"expected a float video (normalised pixels), got dtype {video.dtype}")
        weight = next(self.family.model.parameters())
        if video.device != weight.device:  # torch's own message names neither tensor
            raise VideoInputError(f"expected a video on the model's device {weight.device}, got one on {video.device}")
        weight_dtype = weight.dtype
        # Autocast casts float32 inputs to the model's compute dtype, but never float64.
        if video.dtype != weight_dtype and (video.dtype == torch.float64
                                            or not torch.is_autocast_enabled(video.device.type)):
            raise VideoInputError(f"expected a video of the model's dtype {weight_dtype}, got {video.dtype}: use "
                                  f"video.to({weight_dtype})")
        batch, channels, num_frames, height, width = video.shape
        if video.numel() == 0:
            raise VideoInputError(f"expected a non-empty (B, C, T, H, W) video, got shape {tuple(video.shape)}")
        expected_channels = self.in_channels
        if channels != expected_channels:
            hint = ""
            if num_frames == expected_channels:
                hint = " It looks like (B, T, C, H, W): use video.permute(0, 2, 1, 3, 4)."
            raise VideoInputError(
                f"expected {expected_channels} channels at dim 1 of a (B, C, T, H, W) video, got shape "
                f"{tuple(video.shape)}.{hint}"
            )
        self.family.check_frame_size(height, width)  # raises VideoInputError
        return batch, channels, num_frames, height, width

    # ------------------------------------------------------------------ bookkeeping
    @property
    def strategy_name(self) -> str:
        return self.strategy.name

    @property
    def strategy_config(self) -> dict[str, Any]:
        """JSON-serialisable description of how this model was built."""
        return {
            "strategy": self.strategy.name,
            "options": self.strategy.options(),
            "num_frames": self.num_frames,
            "num_classes": self.num_classes,
            "backbone": self.architecture,
            "merged": self.merged,
        }

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) that input frames must be normalised with for this backbone."""
        return self.family.normalization()

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Trade compute for activation memory in the backward pass.

        Every mode gives the same outputs and gradients, bit for bit; they differ in what autograd keeps.

        Args:
            enable: False (the default state) recomputes only the cheap parts of each adapted block
                (adapters' hidden units, a norm feeding only an adapter, and AIM's temporal branch after
                its q/k/v projection) from tensors kept anyway; under autocast, AIM also keeps its norms'
                float32 inputs as the block input plus the low-precision branch outputs. ``"temporal"`` recomputes each block's
                whole temporal branch (norm, q/k/v and output projections, the short attention over
                frames, the temporal adapters) as well. True recomputes every block (least memory, one
                more forward pass). ``"none"`` recomputes nothing (most memory, least compute).

        Raises:
            ValueError: for any other value.
        """
        if not (isinstance(enable, bool) or enable in ("temporal", "none")):
            raise ValueError(f"set_grad_checkpointing takes True, False, 'temporal' or 'none', got {enable!r}")
        self._grad_checkpointing = enable is True
        for block in self.family.blocks():
            if isinstance(block, VideoBlock):
                block.checkpoint_temporal = enable == "temporal"
                # A checkpointed block recomputes everything anyway.
                block.recompute_adapters = enable is False or enable == "temporal"

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts, as PEFT returns them."""
        from adaptkit.counting import count_parameters

        total, trainable = count_parameters(self)
        return trainable, total

    def print_trainable_parameters(self) -> None:
        """Print ``trainable params: X || all params: Y || trainable%: Z`` (PEFT's format)."""
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """``nn.Module.state_dict``, refused after ``unload()`` (the backbone is the image model's again).

        Raises:
            UnloadedModelError: after ``unload()``.
        """
        self._require_loaded("take its state_dict")
        return super().state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """``nn.Module.load_state_dict``, refused after ``unload()``.

        Raises:
            UnloadedModelError: after ``unload()``.
        """
        self._require_loaded("load a state_dict")
        return super().load_state_dict(*args, **kwargs)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The active adapter set's own tensors, keyed as in ``state_dict()``: what checkpoints hold.

        These are the tensors the strategy made trainable when the set was built (adapters, head, temporal
        embedding, trainable copies; the whole backbone for full finetuning), whatever their ``requires_grad``
        says now: a model loaded frozen saves the same tensors as the model that was trained.
        """
        names = self._adapter_tensor_names
        return {name: p for name, p in self._active_parameters() if name in names}

    def _active_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("adapter_sets.")]

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """The image model's own tensors, keyed as in the plain timm / open_clip model (wrappers looked through).

        What a merged model saves: load it into a fresh image model with ``strict=False``; only the
        image classifier head (which the video model drops) is missing. Tensors a wrapper added
        (unmerged adapters) are not the image model's and are left out.
        """
        wrappers = [name for name, m in self.backbone.named_modules() if isinstance(m, VideoBlock)]
        state = {}
        for key, value in self.backbone.state_dict().items():
            owner = next((w for w in wrappers if key.startswith(f"{w}.")), None)
            if owner is not None:
                if not key.startswith(f"{owner}.block."):
                    continue  # the wrapper's own tensor
                key = owner + key[len(owner) + len(".block"):]
            state[key] = value
        return state

    def load_backbone_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a :meth:`backbone_state_dict` into the backbone; strict on names and shapes.

        Raises:
            KeyError: missing or unexpected keys. ValueError: a tensor of the wrong shape.
        """
        from adaptkit.checkpoint import copy_strict

        copy_strict(self.backbone_state_dict(), state, "backbone weights")

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (the set's own tensors,
        :meth:`trainable_state_dict`) into folder ``path``.

        Raises:
            FileExistsError: ``path`` is an existing file.
            UnloadedModelError: (a RuntimeError) the model was unloaded.
        """
        from adaptkit.checkpoint import save_pretrained

        self._require_loaded("save an adapter")
        save_pretrained(self, path)

    # ------------------------------------------------------------------ optimisation
    def no_weight_decay(self) -> set[str]:
        """Names of trainable parameters that take no weight decay (timm's and open_clip's convention).

        Every tensor of at most one dimension (biases, norm scales, layer scales), the temporal
        embedding and relative temporal bias tables, and what the backbone's own ``no_weight_decay()``
        names (position embeddings, class tokens, relative position bias tables).
        """
        return groups.no_weight_decay(self)

    def param_groups(self, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Trainable parameters in optimizer groups by role, each split by :meth:`no_weight_decay`.

        Roles: ``"head"`` (the new classifier), ``"adapters"`` (every module the strategy added:
        adapters, LoRA factors, temporal embedding and biases), ``"norms"`` (trainable copies of
        frozen norms, e.g. AIM's final norm) and ``"backbone"`` (the image model's own weights, trained
        in place by full finetuning). Each group is ``{"name": "<role>" or "<role>_no_decay", "role",
        "params", "weight_decay"}``; empty groups are left out. Pass the list to any torch optimizer and
        set a per-role ``lr`` on it if needed.
        """
        return groups.param_groups(self, weight_decay)

    # ------------------------------------------------------------------ merging
    def merge(self, probe: torch.Tensor | None = None, tolerance: float | None = None) -> VideoModel:
        """Fold the strategy's adapters into the frozen weights, in place, after checking the result.

        Before keeping a merge, the model's features on a probe batch are computed both ways; if
        ``max|merged - unmerged| / max|unmerged|`` exceeds ``tolerance`` the merge is undone and
        refused (a merge nobody checked cost the reference code's users 18 points of accuracy).

        Args:
            probe: A (B, C, T, H, W) video to check on; by default 2 seeded random clips of the model's
                clip length at the backbone's input size. Real frames make the strictest check. On the
                meta device (for counting) there is nothing to compare and no check runs.
            tolerance: Largest accepted relative difference; defaults to :data:`MERGE_TOLERANCE` for
                the backbone's dtype (fp32: 1e-5).

        Returns:
            This model, merged: a strategy such as ``zero-i2v`` then has exactly the plain image
            model's parameters and inference cost. ``unload()`` afterwards returns the image model
            with the merged weights.

        Raises:
            MergeError: (a RuntimeError and TypeError) the strategy cannot be merged, the model is already
                merged, other adapter sets share the backbone, or the merged model differs beyond
                tolerance (the message gives the difference; the model is left unmerged).
            UnloadedModelError: (a RuntimeError) the model was unloaded.
        """
        return self_checks.merge(self, probe, tolerance)

    def merge_and_unload(self, probe: torch.Tensor | None = None, tolerance: float | None = None) -> VideoModel:
        """PEFT's name for :meth:`merge`: the adapters are folded in and their modules removed.

        Unlike PEFT, the result is still this video model, since the strategy's temporal modelling
        (e.g. ``zero-i2v``'s head assignment) lives in it; ``unload()`` gives the merged image model.
        """
        return self.merge(probe, tolerance)

    # ------------------------------------------------------------------ several adapter sets
    def add_adapter(self, name: str, strategy: str = "aim", num_classes: int | None = None, **options: Any) -> None:
        """Add a named adapter set on the same frozen backbone, without activating it (PEFT's ``add_adapter``).

        The model built by :func:`adaptkit.inject` is the set ``"default"``. Sets share the backbone
        and the clip length; each has its own strategy, options, head and trainable tensors, and is
        saved and loaded on its own. Strategies that change the backbone itself (``lora``,
        ``space-only``, ``timesformer``, a merged model) cannot share it.

        Args:
            name: A new set name (no dots).
            strategy: A registered strategy name.
            num_classes: Size of this set's head; defaults to the active set's.
            **options: The strategy's options.

        Raises:
            ValueError: a name in use or with a dot; bad options (StrategyOptionError, also for ``num_frames``,
                which every set shares). TypeError: a strategy that cannot share.
        """
        adapter_sets.add_adapter(self, name, strategy, num_classes, **options)

    def set_adapter(self, name: str) -> None:
        """Make adapter set ``name`` the active one; the previously active set is kept, detached."""
        adapter_sets.set_adapter(self, name)

    def delete_adapter(self, name: str) -> None:
        """Drop an inactive adapter set and its tensors."""
        adapter_sets.delete_adapter(self, name)

    @property
    def adapter_names(self) -> list[str]:
        """Every adapter set's name, the active one first."""
        return [self.active_adapter, *self.adapter_sets]

    def load_adapter(
        self, path: str | Path, name: str, ignore_architecture_mismatch: bool = False, is_trainable: bool = False
    ) -> None:
        """Add the set saved by ``save_pretrained`` in ``path`` under ``name`` (not activated); strict like
        :func:`adaptkit.from_pretrained`, architecture check included. As in PEFT, the set's tensors are frozen
        unless ``is_trainable``."""
        adapter_sets.load_adapter(self, path, name, ignore_architecture_mismatch, is_trainable)

    # ------------------------------------------------------------------ surgery helpers
    def _stash(self, path: str, replacement: Any) -> Any:
        """Take the attribute at ``path`` (on the backbone) out of the model, remembering it for unload.

        Modules are replaced by ``replacement`` (``nn.Identity()`` when None); parameters by None.
        """
        parent_path, _, attr = path.rpartition(".")
        parent = operator.attrgetter(parent_path)(self.backbone) if parent_path else self.backbone
        original = getattr(parent, attr)
        if original is None:
            return None
        self._restore.stashed[path] = original
        if isinstance(original, nn.Parameter):
            setattr(parent, attr, replacement)
        else:
            setattr(parent, attr, replacement if replacement is not None else nn.Identity())
        return original

    def train_copy_of(self, path: str) -> nn.Module:
        """Replace a frozen backbone module by a trainable copy; unload restores the original."""
        parent_path, _, attr = path.rpartition(".")
        parent = operator.attrgetter(parent_path)(self.backbone) if parent_path else self.backbone
        trainable = copy.deepcopy(getattr(parent, attr)).requires_grad_(True)
        self._stash(path, replacement=trainable)
        self._restore.trainable_copies.append(path)
        return trainable

    def unload(self) -> nn.Module:
        """Remove everything the strategy added and give back the image model as it was.

        Returns the object passed to :func:`adaptkit.inject` (a whole open_clip CLIP model if that
        is what was given), with its original modules, ``requires_grad`` flags and weights. For
        fully finetuned strategies (``space-only``, ``timesformer``) the backbone weights are the
        finetuned ones, as finetuning changed them in place. The video model is unusable afterwards.
        """
        self._require_loaded("unload again")
        restore = self._restore
        self.adapter_sets = nn.ModuleDict()  # inactive sets hold no frozen module; dropping them is enough
        self._set_info = {}
        if restore.applied:
            self.strategy.remove(self._context(), restore.strategy_state)
        blocks = self.family.blocks()
        for i, block in enumerate(blocks):
            if isinstance(block, VideoBlock):
                blocks[i] = block.block
        device = next(self.backbone.parameters()).device
        for path, original in restore.stashed.items():
            parent_path, _, attr = path.rpartition(".")
            parent = operator.attrgetter(parent_path)(self.backbone) if parent_path else self.backbone
            setattr(parent, attr, original.to(device) if isinstance(original, nn.Module) else original)
        # What a strategy's remove() did not undo: modules it replaced are put back, tensors it added removed.
        replaced = [name for name, module in restore.modules.items()
                    if name and _get_module(self.backbone, name) is not module]
        for name in replaced:
            if _get_module(self.backbone, name) is not restore.modules[name]:  # a restored parent restored it
                parent_path, _, attr = name.rpartition(".")
                setattr(restore.modules[parent_path], attr, restore.modules[name])
        added = [name for name, _ in self.backbone.named_parameters() if name not in restore.requires_grad]
        added += [name for name, _ in self.backbone.named_buffers() if name not in restore.buffers]
        for name in added:
            _remove_added(self.backbone, name, known_modules=restore.modules)
        if replaced or added:
            left = [*(f"{name} (replaced)" for name in replaced), *added]
            warnings.warn(f"strategy {self.strategy.name!r} left {left[:3]}{' ...' if len(left) > 3 else ''} on the "
                          "backbone after its remove(); unload() restored the image model's own modules and removed "
                          "the added tensors (a strategy should undo its changes in remove())", stacklevel=2)
        for name, param in self.backbone.named_parameters():
            param.requires_grad_(restore.requires_grad[name])
        # PEFT's unload of nn.MultiheadAttention re-registers in_proj_weight last; give back the original order.
        for name, module in self.backbone.named_modules():
            order = restore.parameter_order.get(name)
            if order is not None and list(module._parameters) != order and set(module._parameters) == set(order):
                module._parameters = {key: module._parameters[key] for key in order}
        delattr(self.backbone, INJECTED_MARKER)
        self._restore = None
        self._adapter_tensor_names = set()
        return restore.image_model

    def extra_repr(self) -> str:
        merged = ", merged" if self.merged else ""
        return f"strategy={self.strategy.name!r}, num_frames={self.num_frames}, num_classes={self.num_classes}{merged}"


def _get_module(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return operator.attrgetter(path)(root)
    except AttributeError:
        return None


def _remove_added(backbone: nn.Module, name: str, known_modules: Mapping[str, nn.Module]) -> None:
    """Delete the tensor ``name``, or the outermost module on its path that the image model did not have."""
    parts = name.split(".")
    depth = next((d for d in range(1, len(parts)) if ".".join(parts[:d]) not in known_modules), len(parts))
    parent = _get_module(backbone, ".".join(parts[:depth - 1])) if depth > 1 else backbone
    if parent is not None and hasattr(parent, parts[depth - 1]):  # gone already with a module removed before
        delattr(parent, parts[depth - 1])


def _patch_embed_channels(backbone: nn.Module) -> int:
    """Input channels, read off the first Conv2d (the patch embedding in every supported family)."""
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise TypeError("cannot find the patch embedding's Conv2d to read the input channel count")
