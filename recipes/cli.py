"""The ``adaptkit`` command: train, evaluate and predict with the recipes, list and copy the shipped configs, count
a model's cost.

    adaptkit train                                  # the default config (recipes._config.DEFAULT_CONFIG)
    adaptkit train --config k400_vitb16_8x16 optim.lr=1e-4
    adaptkit evaluate --checkpoint runs/synthetic_motion/final
    adaptkit predict my_video.mp4 --checkpoint runs/synthetic_motion/final
    adaptkit ls                                     # the shipped configs
    adaptkit cp k400_vitb16_8x16 my_k400.yaml       # a config to edit, then: adaptkit train --config my_k400.yaml
    adaptkit cost vit_base_patch16_clip_224         # parameters and GMACs of every strategy on that image model
    adaptkit cache --config k400_vitb16_8x16 --out frames/   # pre-decode the videos (then data.frame_cache=frames/)

Any error is one line on stderr and exit status 2; ``--debug`` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import builtins
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recipes._args import ArgumentParser, UsageError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a Unix tool whose reader left


def _train(argv: list[str]) -> Any:
    from recipes import train

    return train.main(argv)


def _evaluate(argv: list[str]) -> Any:
    from recipes import evaluate

    return evaluate.main(argv)


def _predict(argv: list[str]) -> Any:
    from recipes import predict

    return predict.main(argv)


def _cache(argv: list[str]) -> Any:
    from recipes import cache_frames

    return cache_frames.main(argv)


def _cost(argv: list[str]) -> Any:
    from recipes import cost

    return cost.main(argv)


def describe(config_file: Path) -> str:
    """The first sentence of a config's header comment (the lines after its command line)."""
    words = []
    for line in config_file.read_text(encoding="utf-8").splitlines()[1:]:
        text = line.lstrip("#").strip()
        if not line.startswith("#") or (not text and words):
            break
        words += text.split()
    sentence = " ".join(words)
    return sentence.split(". ")[0].rstrip(".")


def _ls(argv: list[str]) -> list[str]:
    """Print the shipped configs, one per line with its description (the config's header line after the command)."""
    from recipes._config import CONFIG_DIR, DEFAULT_CONFIG, list_configs

    ArgumentParser(prog="adaptkit ls", description="List the shipped configs.").parse_args(argv)
    names = list_configs()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {'(default) ' if name == DEFAULT_CONFIG else ''}{describe(CONFIG_DIR / f'{name}.yaml')}")
    print(f"\n{len(names)} configs in {CONFIG_DIR}; `adaptkit cp NAME FILE` copies one to edit")
    return names


def _cp(argv: list[str]) -> Path:
    """Copy a shipped config to a file (or into a folder) to edit."""
    from recipes._config import resolve_config

    parser = ArgumentParser(prog="adaptkit cp", description="Copy a shipped config to edit it.")
    parser.add_argument("name", help="config name (`adaptkit ls`)")
    parser.add_argument("destination", type=Path, help="file or existing folder")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args(argv)
    source = resolve_config(args.name)
    target = args.destination / source.name if args.destination.is_dir() else args.destination
    if target.exists() and not args.force:
        raise FileExistsError(f"{target} exists; pass --force to overwrite it")
    if not target.parent.is_dir():  # as cp does: a mistyped folder is not created
        raise FileNotFoundError(f"folder {target.parent} does not exist")
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    if lines and lines[0].startswith("# adaptkit train"):  # the config's first line is the command that runs it
        lines[0] = f"# adaptkit train --config {target}\n"
    target.write_text("".join(lines), encoding="utf-8")
    print(f"copied {source.stem} to {target}; train with: adaptkit train --config {target}")
    return target


COMMANDS: dict[str, tuple[Callable[[list[str]], Any], str]] = {
    "train": (_train, "train a video model (default: embedded_actions, which needs no data and no download)"),
    "evaluate": (_evaluate, "multi-view evaluation of a trained model folder"),
    "predict": (_predict, "top classes of one video file"),
    "ls": (_ls, "list the shipped configs"),
    "cp": (_cp, "copy a shipped config to edit it"),
    "cost": (_cost, "parameters and GMACs of every strategy on an image model you name"),
    "cache": (_cache, "decode a config's videos once into a pre-decoded frame cache"),
}


def _usage() -> str:
    lines = ["usage: adaptkit [--debug] COMMAND [ARGS ...]", "", "commands:"]
    lines += [f"  {name:<9} {about}" for name, (_, about) in COMMANDS.items()]
    lines += ["", "`adaptkit COMMAND --help` describes a command; --debug shows tracebacks."]
    return "\n".join(lines)


def one_line(error: BaseException) -> str:
    """An exception as one line: its message with line breaks folded. Built-in errors other than ValueError and
    OSError (whose messages say what is wrong) keep their type name, e.g. ``KeyError: 'step'``. An error raised in a
    DataLoader worker is the worker's own, followed by where it was raised, not PyTorch's copy of its traceback."""
    from recipes._workers import worker_error

    original = worker_error(error)
    kind: object = type(error)
    name, message, where = type(error).__name__, str(error), ""
    if original is not None:  # a built-in type is named without its module in a traceback
        kind = getattr(builtins, original.kind, None) if "." not in original.kind else None
        name, message, where = original.kind.rsplit(".", 1)[-1], original.message, f" ({original.where})"
    message = " ".join(message.split())
    builtin = isinstance(kind, type) and kind.__module__ == "builtins"
    if not message or (builtin and not issubclass(kind, (ValueError, OSError))):
        message = f"{name}: {message}" if message else name
    return message + where


def _rank() -> int:
    """This process's rank under torchrun (0 without it)."""
    return int(os.environ.get("RANK", "0"))


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0, 2 on any error, 130 when interrupted, 141 when the reader of
    stdout went away)."""
    try:
        return _run(argv)
    except BrokenPipeError:
        # The reader went away (`adaptkit ls | head`): stop quietly, as a Unix tool killed by SIGPIPE does. Python
        # would report the failed flush of the rest at exit, so stdout goes to /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _run(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_ERROR
    if argv[0] in ("-V", "--version"):
        from adaptkit import __version__

        print(f"adaptkit {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    prog = f"adaptkit {command}"
    try:
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}; commands: {', '.join(COMMANDS)} (see `adaptkit --help`)")
        COMMANDS[command][0](rest)
    except KeyboardInterrupt as interrupt:
        if debug:
            raise
        from recipes._interrupt import FinalEvaluationInterrupted, StoppedAtOnce, TrainingInterrupted

        # Stopped cleanly: at a step with a checkpoint, or in the final evaluation with final/ written
        if isinstance(interrupt, (TrainingInterrupted, FinalEvaluationInterrupted)):
            if _rank() == 0:
                print(f"{prog}: {interrupt}", file=sys.stderr)
            return interrupt.exit_status
        if isinstance(interrupt, StoppedAtOnce):  # the signal's own status: 143 for SIGTERM, as the first gives
            print(f"{prog}: {interrupt}", file=sys.stderr)
            return interrupt.exit_status
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exit_:  # --help, or a library's own SystemExit(message)
        if debug or exit_.code in (None, 0):
            raise
        if isinstance(exit_.code, int):
            return exit_.code
        print(f"{prog}: error: {' '.join(str(exit_.code).split())}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        raise  # not the command's error: main() stops quietly
    except Exception as error:  # noqa: BLE001 - the point: every error is one line unless --debug
        if debug:
            raise
        logging.shutdown()
        from recipes._distributed import is_collective_timeout, is_peer_failure

        if is_collective_timeout(error):  # gloo's message names a C++ file, not the setting or what to check
            print(f"{prog}: rank {_rank()}: timed out waiting for another process (train.dist_timeout_min): one "
                  "stopped answering or is far slower (stuck on storage, paused); raise train.dist_timeout_min if "
                  "that is expected (--debug shows the traceback)", file=sys.stderr)
        elif is_peer_failure(error):  # the collective's own message (e.g. "Connection closed by peer") misleads
            print(f"{prog}: rank {_rank()}: stopped because another process failed (its error says why; --debug "
                  "shows this one's traceback)", file=sys.stderr)
        else:
            # Under torchrun every process may print its own line, interleaved: the others name their rank, as their
            # warnings do (rank 0's line stays as in a single process).
            rank = f"rank {_rank()}: " if _rank() != 0 and int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
            print(f"{prog}: {rank}error: {one_line(error)} (--debug shows the traceback)", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
