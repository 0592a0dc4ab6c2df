"""Space-only baselines of AIM's Table 1: a linear probe and full finetuning, frame by frame."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from adaptkit.strategies.base import StrategyConfig, register_strategy

if TYPE_CHECKING:
    from adaptkit.model import VideoModel


@register_strategy
@dataclasses.dataclass
class LinearProbeConfig(StrategyConfig):
    """Frozen space-only model: frames pass the frozen image model, only the new head trains."""

    name = "linear-probe"

    def apply(self, video_model: VideoModel) -> None:
        """Nothing to add: the backbone stays frozen."""


@register_strategy
@dataclasses.dataclass
class SpaceOnlyConfig(StrategyConfig):
    """Fully finetuned space-only model: every backbone weight trains, no temporal modelling."""

    name = "space-only"

    def apply(self, video_model: VideoModel) -> None:
        video_model.backbone.requires_grad_(True)
