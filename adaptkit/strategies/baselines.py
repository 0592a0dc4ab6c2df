"""Space-only baselines of AIM's Table 1: a linear probe and full finetuning, frame by frame."""

from __future__ import annotations

import dataclasses

from adaptkit.strategies.base import StrategyConfig, StrategyContext, register_strategy


@register_strategy
@dataclasses.dataclass
class LinearProbeConfig(StrategyConfig):
    """Frozen space-only model: frames pass the frozen image model, only the new head trains.

    AIM's first baseline (Sec. 4.1, Table 1 row 1; space-only models: Sec. 3.1): linear probing.
    """

    name = "linear-probe"

    def apply(self, context: StrategyContext) -> None:
        """Nothing to add: the backbone stays frozen."""


@register_strategy
@dataclasses.dataclass
class SpaceOnlyConfig(StrategyConfig):
    """Fully finetuned space-only model: every backbone weight trains, no temporal modelling.

    AIM's second baseline (Sec. 4.1, Table 1 row 2).
    """

    name = "space-only"

    def apply(self, context: StrategyContext) -> None:
        context.backbone.requires_grad_(True)
