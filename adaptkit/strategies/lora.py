"""LoRA through PEFT on every frame (space-only): the parameter-efficient image baseline."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from adaptkit.backbones.base import BackboneFamily
from adaptkit.errors import StrategyOptionError
from adaptkit.strategies.base import StrategyConfig, StrategyContext, check_range, register_strategy


@register_strategy
@dataclasses.dataclass
class LoRAConfig(StrategyConfig):
    """PEFT LoRA on the backbone's attention projections; frames are processed independently.

    PEFT applies LoRA to ``nn.MultiheadAttention`` (open_clip) by adding the update into the frozen
    ``in_proj_weight`` before each forward and subtracting it after, which leaves float round-off
    in the frozen weight. ``unload()`` therefore restores exact copies of those weights.
    """

    name = "lora"
    merge_refusal = "folding PEFT's LoRA layers inside a video model is not implemented yet; save and load it unmerged"

    r: int = 8
    """Rank of the update."""
    alpha: float = 16.0
    """Scaling numerator: the update is scaled by alpha / r."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: list[str] | None = None
    """PEFT target modules; None picks the family's default (e.g. ``["qkv"]`` for timm ViT)."""

    def validate(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"lora option r must be a positive integer, got {self.r!r}")
        check_range(self, "alpha", 0.0, 1e6)
        check_range(self, "dropout", 0.0, 1.0, high_inclusive=False)
        if self.target_modules is not None and (
            not isinstance(self.target_modules, list) or not all(isinstance(t, str) for t in self.target_modules)
        ):
            raise ValueError(f"lora option target_modules must be a list of module names, got {self.target_modules!r}")

    def apply(self, context: StrategyContext) -> tuple[Any, dict[str, torch.Tensor]]:
        """Inject LoRA; returns (PEFT's LoraModel, exact copies of the weights PEFT updates in place)."""
        from peft import LoraConfig, LoraModel

        backbone = context.backbone
        targets = self.target_modules or context.family.lora_targets()
        peft_config = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets)
        merged_in_place = {
            f"{name}.{key}": value.detach().clone()
            for name, module in backbone.named_modules()
            if isinstance(module, nn.MultiheadAttention)
            for key, value in module.named_parameters()
        }
        try:
            # LoraModel injects in place into the backbone (and freezes the rest); kept for remove().
            return LoraModel(backbone, peft_config, "default"), merged_in_place
        except ValueError as error:  # PEFT's NoMatchingPeftModuleError (a plain ValueError in older releases)
            if type(error).__name__ != "NoMatchingPeftModuleError" and "not found in the base model" not in str(error):
                raise
            # PEFT looks for the targets before it changes anything, so the image model is as it was.
            hint = (f"Use target_modules that work on {context.family.name}: {context.family.lora_targets()} (the "
                    "default)." if self.target_modules is not None else
                    f"These are {context.family.name}'s default targets (family.lora_targets()): name modules this "
                    "model has in target_modules, or correct the family's lora_targets.")
            raise StrategyOptionError(f"lora: target_modules {targets} match no module of this {context.family.name} model. "
                             f"{hint}") from error

    def wrapped_modules(self, state: tuple[Any, dict[str, torch.Tensor]]) -> dict[str, nn.Module]:
        from peft.tuners.lora import LoraLayer

        lora_model, _ = state
        return {name: m for name, m in lora_model.model.named_modules() if isinstance(m, LoraLayer)}

    def working_targets(self, family: BackboneFamily) -> str:
        if self.target_modules is None:  # the defaults themselves failed: the weights cut them off, not the names
            return (f"These are {family.name}'s default targets ({family.lora_targets()}): a layer after them is zero "
                    f"in these weights (a zero layer scale or norm weight; timm starts SwinV2's post-attention norms "
                    f"at zero), so load the pretrained weights first, or name other target_modules.")
        return f"Use target_modules that work on {family.name}: {family.lora_targets()} (the default)."

    def remove(self, context: StrategyContext, state: tuple[Any, dict[str, torch.Tensor]]) -> None:
        lora_model, merged_in_place = state
        lora_model.unload()
        params = dict(context.backbone.named_parameters())
        with torch.no_grad():
            for name, original in merged_in_place.items():
                params[name].copy_(original)
