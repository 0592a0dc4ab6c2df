"""Command-line parsing shared by the recipes: usage mistakes are one-line errors, like every other CLI error."""

from __future__ import annotations

import argparse
from typing import NoReturn


class UsageError(ValueError):
    """A command line argparse cannot parse (missing argument, unknown flag)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake raises :class:`UsageError` (one line, exit 2 from ``adaptkit``) instead of
    printing the usage block and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")
