"""AIM: spatial, temporal and joint adaptation of a frozen image transformer (Yang et al., ICLR 2023)."""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from timm.layers import DropPath
from torch import nn

from adaptkit.backbones.base import BackboneFamily, SpatialContext
from adaptkit.layers import Adapter
from adaptkit.strategies.base import (
    StrategyConfig,
    StrategyContext,
    VideoBlock,
    check_bool,
    check_range,
    drop_path_rates,
    parse_layers,
    register_strategy,
    validate_layers_spec,
)


@register_strategy
@dataclasses.dataclass
class AIMConfig(StrategyConfig):
    """Options of the ``"aim"`` strategy (defaults: the paper's Kinetics setting, AIM App. A.1).

    Yang et al., "AIM: Adapting Image Models for Efficient Video Action Recognition", ICLR 2023:
    spatial (Sec. 3.2), temporal (Sec. 3.3) and joint (Sec. 3.4) adaptation, Fig. 2(c)-(e).

    Raises:
        ValueError: from :func:`adaptkit.inject`, for an option out of range (``ratio`` outside (0, 1], ``scale``
            outside [0, 100], ``drop_path`` outside [0, 1)), a non-bool switch, ``temporal_in`` without
            ``temporal``, all three adaptations off, a malformed ``layers``, or a ``temporal_blocks`` the
            backbone family does not offer or that leaves no selected block with temporal attention.
    """

    name = "aim"

    spatial: bool = True
    """Adapter (with skip) on the attention output: spatial adaptation."""
    temporal: bool = True
    """Re-use each block's frozen attention along time, followed by an adapter (no skip)."""
    joint: bool = True
    """Adapter (no skip) beside the MLP, scaled by ``scale``: joint adaptation."""
    temporal_in: bool = False
    """SSv2 variant: one more adapter (with skip) before the re-used temporal attention (App. A.2)."""
    ratio: float = 0.25
    """Adapter bottleneck width as a fraction of the token width (Table 8)."""
    scale: float = 0.5
    """Weight s of the joint adapter's output (Eq. 5; App. A: 0.5; the reference uses 1.0 with ``temporal_in``)."""
    layers: str | list[int] = "all"
    """Blocks to adapt: 'all', 'top:N', 'bottom:N', 'every:N' or a list of indices (Table 7)."""
    drop_path: float = 0.0
    """Max stochastic-depth rate, linear over depth, on the temporal and joint branches only."""
    temporal_blocks: str | None = None
    """Which adapted blocks get temporal attention, where the family offers a choice; None is the
    family's default. Swin: 'unshifted' (default, the paper) or 'all'. Other families: must be None."""

    def validate(self) -> None:
        check_bool(self, "spatial", "temporal", "joint", "temporal_in")
        check_range(self, "ratio", 0.0, 1.0, low_inclusive=False)  # an adapter needs at least one hidden unit
        check_range(self, "scale", 0.0, 100.0)
        check_range(self, "drop_path", 0.0, 1.0, high_inclusive=False)
        if self.temporal_in and not self.temporal:
            raise ValueError("aim option temporal_in=True needs temporal=True (it feeds the temporal attention)")
        if not (self.spatial or self.temporal or self.joint):
            raise ValueError("aim needs at least one of spatial, temporal, joint; use 'linear-probe' for none")
        validate_layers_spec(self.layers)
        if self.temporal_blocks is not None and not isinstance(self.temporal_blocks, str):
            raise ValueError(f"aim option temporal_blocks must be a name or None, got {self.temporal_blocks!r}")

    def check_backbone(self, family: BackboneFamily) -> None:
        choices = family.temporal_block_choices()
        if self.temporal_blocks is not None and not choices:
            raise ValueError(
                f"aim option temporal_blocks={self.temporal_blocks!r} has no meaning on {family.name}: every adapted "
                f"block gets temporal attention there (the option chooses between the shifted- and regular-window "
                f"blocks of hierarchical families such as Swin); leave it unset"
            )
        if self.temporal_blocks is not None and self.temporal_blocks not in choices:
            raise ValueError(
                f"aim option temporal_blocks={self.temporal_blocks!r} is not valid for {family.name}; "
                f"choose one of {', '.join(map(repr, choices))} (default {next(iter(choices))!r})"
            )
        selected = parse_layers(self.layers, len(family.blocks()))
        if self.temporal and not set(selected) & self._temporal_indices(family):
            raise ValueError(
                f"aim: none of the blocks selected by layers={self.layers!r} gets temporal attention on {family.name} "
                f"(temporal_blocks={self.temporal_blocks!r}); select other layers, set temporal_blocks, or temporal=False"
            )

    def _temporal_indices(self, family: BackboneFamily) -> set[int]:
        choices = family.temporal_block_choices()
        if not choices:
            return set(range(len(family.blocks())))
        return set(choices[self.temporal_blocks or next(iter(choices))])

    @property
    def temporal_embedding(self) -> bool:  # type: ignore[override]
        # Without temporal mixing, a per-frame offset would only break frame-order invariance.
        return self.temporal

    def apply(self, context: StrategyContext) -> None:
        family = context.family
        blocks = family.blocks()
        rates = drop_path_rates(self.drop_path, len(blocks))
        temporal = self._temporal_indices(family) if self.temporal else set()
        for i in parse_layers(self.layers, len(blocks)):
            blocks[i] = AIMBlock(blocks[i], family, self, rates[i], i in temporal, context.num_frames)
        for path in family.final_norm_paths():
            context.train_copy_of(path)


class AIMBlock(VideoBlock):
    """One frozen block with AIM's adapters: temporal -> spatial -> joint (AIM Sec. 3.2-3.4, Eq. 3-5, Fig. 2(e)).

    With ``x`` of shape (B*T, N, D)::

        xt = T_adapter(attn_over_time(norm1(x)))        # T_adapter has no skip
        x  = x + drop_path(xt)
        x  = x + S_adapter(attn(norm1(x)))              # S_adapter has a skip
        xn = norm2(x)
        x  = x + mlp(xn) + drop_path(scale * MLP_adapter(xn))

    Both attentions are the block's own frozen module and norm. ``attn_over_time`` attends, for
    each token position of a clip, over its T frames (the reference regroups tokens into (B*N, T, D)
    sequences; here norm, projections and adapters run per token in the frame-folded layout and
    only the attention mixes frames), with no spatial position machinery, plus a new trainable
    relative temporal bias where the family has one (Swin). Fresh adapters leave the block's output
    exactly unchanged.

    Sources: the three lines are the paper's Eq. (3)-(5) (temporal adaptation Sec. 3.3 / Fig. 2(d),
    spatial Sec. 3.2 / Fig. 2(c), joint Sec. 3.4 / Fig. 2(e)); ``temporal_in`` is App. A.2's extra
    adapter before T-MSA. Where the strategy's drop path goes (temporal and joint branches) and the Swin
    variant (temporal attention in the regular-window blocks, AIM Table 6) follow the authors' code.

    Args:
        block: The frozen image block.
        family: Its backbone family (the only code that knows the block's layout).
        config: The AIM options.
        drop_path: Stochastic-depth rate of this block's temporal and joint branches.
        temporal: Whether this block gets temporal attention (``config.temporal`` and the family's
            choice of blocks, e.g. only Swin's regular-window blocks).
        num_frames: Clip length the model is built for (sizes the temporal bias, if any).
    """

    def __init__(
        self, block: nn.Module, family: BackboneFamily, config: AIMConfig, drop_path: float, temporal: bool,
        num_frames: int,
    ) -> None:
        super().__init__(block, family)
        dim = family.block_dim(block)
        self.temporal_adapter_in = Adapter(dim, config.ratio, skip=True) if temporal and config.temporal_in else None
        self.temporal_adapter = Adapter(dim, config.ratio, skip=False) if temporal else None
        self.temporal_bias = family.new_temporal_bias(block, num_frames) if temporal else None
        self.spatial_adapter = Adapter(dim, config.ratio, skip=True) if config.spatial else None
        self.mlp_adapter = Adapter(dim, config.ratio, skip=False) if config.joint else None
        self.scale = config.scale
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, spatial: SpatialContext, num_frames: int) -> torch.Tensor:
        f, blk = self.family, self.block
        # Under autocast the residual stream is float32 and the branch outputs are bfloat16: the norms'
        # inputs are kept as x (kept anyway) plus those outputs, at half the bytes.
        terms: tuple[torch.Tensor, ...] = ()
        x1 = x
        if self.temporal_adapter is not None:
            terms = (self.drop_path(self.run_temporal(self._temporal, x, num_frames)),)
            x1 = x + terms[0]

        with self.keep_as_sum(x1, x, *terms) if terms else contextlib.nullcontext():
            xs = f.scale1(blk, f.attend_space(blk, f.norm1(blk, x1), spatial))
            if self.mlp_adapter is not None:
                # The spatial adapter, x2, norm2 and the MLP adapter recompute from x1 and xs in the backward
                # pass; only the frozen MLP reads xn outside.
                x2, xn, adapted = self.run_recomputed(self._spatial_and_joint_adapters, x1, xs)
                x3 = x2 + f.drop_path2(blk, f.mlp(blk, xn))
                return x3 + self.drop_path(self.scale * adapted)

        if self.spatial_adapter is not None:
            xs = self.run_recomputed(self.spatial_adapter, xs)  # keeps xs, not the adapter's hidden units
        terms = (*terms, f.drop_path1(blk, xs))
        x2 = x1 + terms[-1]
        with self.keep_as_sum(x2, x, *terms):
            return x2 + f.drop_path2(blk, f.mlp(blk, f.norm2(blk, x2)))

    def _spatial_and_joint_adapters(
        self, x1: torch.Tensor, xs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x2, norm2(x2), the MLP adapter's output) from the residual stream x1 and the spatial branch xs."""
        f, blk = self.family, self.block
        if self.spatial_adapter is not None:
            xs = self.spatial_adapter(xs)
        x2 = x1 + f.drop_path1(blk, xs)
        xn = f.norm2(blk, x2)
        return x2, xn, self.mlp_adapter(xn)

    def _temporal(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The temporal branch on frame-folded tokens (B*T, N, D); per token except the attention over frames.

        Unless the whole branch is checkpointed, only its input and q/k/v are kept for the backward
        pass: the attention over frames, the output projection and the adapter after it are
        recomputed from q/k/v (which the attention's backward reads anyway).
        """
        f, blk = self.family, self.block
        if self.temporal_adapter_in is None:
            xt = f.norm1(blk, x)
        else:
            xt = self.run_recomputed(self._norm1_and_adapter_in, x)
        recompute = self.recompute_adapters and not self.checkpoint_temporal  # not twice inside a checkpoint
        return f.attend_time(blk, xt, num_frames, self.temporal_bias, tail=self._temporal_tail, recompute=recompute)

    def _norm1_and_adapter_in(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal_adapter_in(self.family.norm1(self.block, x))

    def _temporal_tail(self, y: torch.Tensor) -> torch.Tensor:
        return self.temporal_adapter(self.family.scale1(self.block, y))
