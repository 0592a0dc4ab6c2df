"""Strategies: how an image model becomes a video model. Registered by name on import."""

from adaptkit.strategies.base import StrategyConfig, VideoBlock, list_strategies, make_strategy, register_strategy

# Registration order is the order list_strategies() reports. A new strategy is one file plus one line here.
from adaptkit.strategies import aim, baselines, timesformer, lora  # noqa: E402,F401  isort: skip
from adaptkit.strategies import st_adapter, zero_i2v  # noqa: E402,F401  isort: skip

__all__ = ["StrategyConfig", "VideoBlock", "list_strategies", "make_strategy", "register_strategy"]
