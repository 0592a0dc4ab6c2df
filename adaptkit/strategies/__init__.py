"""Strategies: how an image model becomes a video model. Registered by name on import."""

from adaptkit.strategies.base import (
    StrategyConfig,
    StrategyContext,
    VideoBlock,
    check_bool,
    check_range,
    list_strategies,
    make_strategy,
    parse_layers,
    register_strategy,
    validate_layers_spec,
)

# Registration order is the order list_strategies() reports. A new strategy is one file plus one line here.
from adaptkit.strategies import aim, baselines, timesformer, lora  # noqa: E402,F401  isort: skip
from adaptkit.strategies import st_adapter, zero_i2v  # noqa: E402,F401  isort: skip

# What a strategy of your own needs: the config and context types, the block wrapper, and the option checks.
__all__ = ["StrategyConfig", "StrategyContext", "VideoBlock", "check_bool", "check_range", "list_strategies",
           "make_strategy", "parse_layers", "register_strategy", "validate_layers_spec"]
