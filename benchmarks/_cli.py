"""Command-line parsing shared by the benchmarks: a usage mistake is one line and exit status 2, as in `adaptkit`."""
from __future__ import annotations

import argparse
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake prints one line (``prog: error: ... (see --help)``) instead of the usage block."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _at_least(minimum: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer of at least 1 (a count or a size)."""
    return _at_least(1, text)


def non_negative_int(text: str) -> int:
    """An argparse ``type``: an integer of at least 0 (warm-up rounds, lines to show)."""
    return _at_least(0, text)


def check_timm_model(parser: argparse.ArgumentParser, name: str, image_size: int) -> None:
    """Refuse, as a usage error, a timm name that does not exist or that adaptkit cannot adapt at ``image_size``.

    The model is built on the meta device (no weights, no time) and injected as a linear probe, the strategy
    every family takes.
    """
    import timm
    import torch

    import adaptkit

    if not timm.is_model(name):
        parser.error(f"timm has no model {name!r}")
    try:
        with torch.device("meta"):
            adaptkit.inject(timm.create_model(name, pretrained=False), "linear-probe", num_frames=1, num_classes=None)
            timm.create_model(name, pretrained=False, img_size=image_size)
    except (TypeError, ValueError, AssertionError) as error:
        parser.error(f"--model {name}: {str(error).splitlines()[0]}")
