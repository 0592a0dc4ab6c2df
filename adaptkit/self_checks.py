"""Checks a video model runs on itself: family hooks that do not rebuild the block, a merge that changes the
outputs, wrapped modules that do nothing."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import nn

from adaptkit.errors import MergeError, StrategyOptionError, UnsupportedBackboneError

if TYPE_CHECKING:
    from adaptkit.backbones import BackboneFamily
    from adaptkit.model import VideoModel

MERGE_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10, torch.bfloat16: 2e-2, torch.float16: 2e-3}
"""Largest relative difference ``max|merged - unmerged| / max|unmerged|`` :meth:`VideoModel.merge` accepts, by dtype."""


HOOK_TOLERANCE = 1e-6
"""Largest relative difference between a block's change to its tokens (float64) and the family's hooks composed."""


def check_family_hooks(family: BackboneFamily, in_channels: int) -> None:
    """One frame through the first block, two ways: the block's own forward, and the family's hooks composed as
    the strategies compose them (``norm1 -> attend_space -> scale1 -> drop_path1``, then ``norm2 -> mlp ->
    drop_path2``); on flat families also the attention rebuilt from ``attention_projections``. Skipped on the meta
    device and where the input size is unknown. Built-in families pass by construction; this catches a family of
    one's own whose hooks would make every adapted model silently wrong.

    Raises:
        TypeError: naming the hooks that disagree and by how much.
    """
    model = family.model
    reference = next(model.parameters(), None)
    if reference is None or reference.device.type == "meta":
        return
    size = family.input_size()
    if size is None:
        return
    height, width = size
    modes = {module: module.training for module in model.modules()}
    model.eval()  # dropout and drop path off: both ways must then agree exactly, up to rounding
    try:
        problems = _compare_hooks(family, in_channels, height, width, reference)
    except Exception as error:  # noqa: BLE001 - a hook that fails on one frame: say which check, not a bare traceback
        raise UnsupportedBackboneError(f"backbone family {family.name!r}: its hooks fail on one {height}x{width} frame "
                        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); see "
                        "BackboneFamily's docstrings for each hook's shapes") from error
    finally:
        for module, training in modes.items():
            module.training = training
    if problems:
        raise UnsupportedBackboneError(f"backbone family {family.name!r} does not describe its blocks consistently: "
                        f"{'; '.join(problems)}. Strategies rebuild blocks from these hooks, so every adapted model "
                        "would be wrong")


def _compare_hooks(family: BackboneFamily, in_channels: int, height: int, width: int,
                   reference: torch.Tensor) -> list[str]:
    """What :func:`check_family_hooks` finds wrong, one message per disagreement.

    A float64 copy of the block runs it, and what is compared is the block's change to its input, not its output:
    a branch far smaller than the residual stream (random or layer-scaled weights) must not hide in the rounding.
    """
    from adaptkit.layers.attention import self_attention

    problems = []
    with torch.no_grad():
        frame = torch.randn(1, in_channels, height, width, generator=torch.Generator().manual_seed(0)).to(reference)
        tokens, spatial = family.embed(frame)
        block = copy.deepcopy(family.blocks()[0]).double()
        spatial = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in spatial.items()}
        x = family.pre_blocks(tokens).double()
        expected = family.block_forward(block, x, spatial) - x
        xn = family.norm1(block, x)
        x2 = x + family.drop_path1(block, family.scale1(block, family.attend_space(block, xn, spatial)))
        composed = x2 + family.drop_path2(block, family.mlp(block, family.norm2(block, x2))) - x
        # Relative to the block's change, floored at 1e-9 of the tokens: float64 rounding of the residual sums
        # (~1e-16 of the tokens) stays far below, a wrong hook on even a layer-scaled branch far above.
        difference = _relative_difference(composed, expected, floor=1e-9 * float(x.abs().max()))
        if difference > HOOK_TOLERANCE:
            problems.append(f"norm1 / attend_space / scale1 / norm2 / mlp composed change the tokens differently from "
                            f"block_forward ({difference:.2g} relative)")
        if not family.hierarchical:  # windowed attention (Swin) is not one attention over all tokens
            attn = family.attention(block)
            difference = _relative_difference(self_attention(family.attention_projections(attn, spatial), xn),
                                              family.attend(attn, xn, spatial))
            if difference > HOOK_TOLERANCE:
                problems.append(f"attention_projections rebuild attend with a difference of {difference:.2g} "
                                "(relative; are q/k/v packed as (*, 3, heads, head_dim)?)")
    return problems


def _relative_difference(got: torch.Tensor, expected: torch.Tensor, floor: float = 1e-6) -> float:
    """``max|got - expected| / max(max|expected|, floor)``; infinite for another shape."""
    if got.shape != expected.shape:
        return float("inf")
    return float((got.double() - expected.double()).abs().max() / expected.double().abs().max().clamp_min(floor))


def check_wrapped_modules_matter(video_model: VideoModel, wrapped: dict[str, nn.Module]) -> None:
    """One tiny forward and backward: every module a strategy wrapped by name must run and change the output.

    Raises:
        ValueError: naming the modules never called, or called without effect, and what works instead.
    """
    # A wrapper nested in another (PEFT's LoRA on nn.MultiheadAttention wraps its out_proj too) is reached
    # through its parent's forward; the parent's check covers it.
    wrapped = {name: m for name, m in wrapped.items()
               if not any(name.startswith(f"{other}.") for other in wrapped if other != name)}
    called: set[str] = set()
    hooks = [m.register_forward_hook(lambda *_, name=name: called.add(name)) for name, m in wrapped.items()]
    reference = next(video_model.backbone.parameters())
    height, width = input_size(video_model.family)
    generator = torch.Generator().manual_seed(0)
    video = torch.randn(1, video_model.in_channels, min(video_model.num_frames, 2), height, width, generator=generator)
    was_training = video_model.training
    video_model.eval()
    try:
        features = video_model.forward_features(video.to(device=reference.device, dtype=reference.dtype))
        if reference.device.type != "meta":  # counting on meta: only the calls can be checked
            weights = torch.randn(features.shape, generator=generator).to(features)  # a sum alone can vanish
            params = {name: [p for p in m.parameters() if p.requires_grad] for name, m in wrapped.items()}
            flat = [p for ps in params.values() for p in ps]
            loss = (features * weights).sum()
            grads = torch.autograd.grad(loss, flat, allow_unused=True) if flat and loss.requires_grad else []
            nonzero = {id(p) for p, g in zip(flat, grads) if g is not None and g.abs().sum() > 0}
    finally:
        for hook in hooks:
            hook.remove()
        video_model.train(was_training)
    never_called = sorted(set(wrapped) - called)
    no_effect = [] if reference.device.type == "meta" else sorted(
        name for name in called if not any(id(p) in nonzero for p in params[name]))
    if never_called or no_effect:
        problems = []
        if never_called:
            problems.append(f"never called by the model's forward: {_name_list(never_called)}")
        if no_effect:
            problems.append(f"called but without effect on the output: {_name_list(no_effect)}")
        hint = video_model.strategy.working_targets(video_model.family)
        raise StrategyOptionError(
            f"{video_model.strategy.name}: wrapped module(s) {'; '.join(problems)}; their trainable tensors would get "
            f"no gradient and training would silently leave them untouched.{' ' + hint if hint else ''}"
        )


def merge(video_model: VideoModel, probe: torch.Tensor | None = None, tolerance: float | None = None) -> VideoModel:
    """See :meth:`VideoModel.merge <adaptkit.VideoModel.merge>`."""
    video_model._require_loaded("merge")
    if video_model.merged:
        raise MergeError("this VideoModel is already merged")
    if video_model.adapter_sets:
        raise MergeError(
            f"merging writes into the backbone that adapter sets {list(video_model.adapter_sets)} share; "
            f"delete_adapter() them first (or save them)"
        )
    strategy, restore = video_model.strategy, video_model._restore
    if not strategy.mergeable:
        try:
            strategy.merge(video_model._context(), restore.strategy_state)  # raises TypeError naming why
        except MergeError:
            raise
        except TypeError as error:
            raise MergeError(str(error)) from error
    reference = next(video_model.backbone.parameters())
    if reference.device.type == "meta":  # counting: nothing to compare
        restore.strategy_state, _ = strategy.merge(video_model._context(), restore.strategy_state)
        video_model.merged = True
        video_model.backbone.requires_grad_(False)
        return video_model
    if probe is None:
        height, width = input_size(video_model.family)
        generator = torch.Generator().manual_seed(0)
        probe = torch.randn(2, video_model.in_channels, video_model.num_frames, height, width, generator=generator)
    probe = probe.to(device=reference.device, dtype=reference.dtype)
    tolerance = MERGE_TOLERANCE.get(reference.dtype, 1e-5) if tolerance is None else tolerance
    was_training = video_model.training
    video_model.eval()
    try:
        with torch.no_grad():
            before = video_model.forward_features(probe)
            state, undo = video_model.strategy.merge(video_model._context(), video_model._restore.strategy_state)
            after = video_model.forward_features(probe)
        difference = ((after - before).abs().max() / before.abs().max().clamp_min(1e-30)).item()
        if not difference <= tolerance:  # also refuses NaN
            undo()
            raise MergeError(
                f"merging {video_model.strategy.name!r} changed the features by {difference:.3g} (relative, max over a "
                f"probe batch of shape {tuple(probe.shape)}), more than the tolerance {tolerance:g}; the model "
                f"was left unmerged"
            )
    finally:
        video_model.train(was_training)
    video_model._restore.strategy_state = state
    video_model.merged = True
    video_model.backbone.requires_grad_(False)  # merged weights are frozen image weights again
    return video_model


def _name_list(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def input_size(family: BackboneFamily) -> tuple[int, int]:
    """The frame size the backbone was built for (:meth:`BackboneFamily.input_size`).

    Raises:
        UnsupportedBackboneError: the family cannot tell it (a probe video must then be passed).
    """
    size = family.input_size()
    if size is None:
        raise UnsupportedBackboneError(f"backbone family {family.name!r} cannot tell the backbone's input size "
                                       "(override BackboneFamily.input_size()); pass a probe video")
    return size
