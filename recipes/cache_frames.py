"""Decode a config's training and validation videos once into a pre-decoded frame cache, for when decoding cannot
keep up with the accelerator.

    adaptkit cache --config k400_vitb16_8x16 --out /fast_disk/k400_frames
    adaptkit train --config k400_vitb16_8x16 data.frame_cache=/fast_disk/k400_frames
    adaptkit evaluate --checkpoint runs/k400_vitb16_8x16/final data.frame_cache=/fast_disk/k400_frames

Frames are stored raw (uint8, memory-mapped chunk files) with their short side at the training transform's
``data.augment.resize_size`` (``--short-side`` to change it): about frames x H x W x 3 bytes per video, e.g. 65 MB for
10 s at 25 fps and 256x340. Training clips and multi-view evaluation read the same cache; a video that could not be
decoded is listed in the cache and skipped by both, as a broken file would be. The command ends with every listed
video it did not cache (missing or unreadable) and why; missing files count against ``data.max_missing_fraction``.

A video changed after caching (size or modification time) is skipped, and said so, until the cache is updated:

    adaptkit cache --config k400_vitb16_8x16 --out /fast_disk/k400_frames --update

decodes only the new, changed and previously unreadable videos into new chunk files and keeps the rest.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adaptkit.data import FrameCache, VideoRecord, build_frame_cache
from recipes._args import ArgumentParser, UsageError
from recipes._config import load_config
from recipes._data import load_split
from recipes._logging import setup_logging


def parse_args(argv: list[str] | None, prog: str = "adaptkit cache") -> argparse.Namespace:
    parser = ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--config", help="config name or YAML (the data section says which videos)")
    parser.add_argument("--out", required=True, type=Path, help="cache folder to create")
    parser.add_argument("--split", choices=["train", "val", "both"], default="both",
                        help="which split's videos (default both: a run reads both splits from the cache)")
    parser.add_argument("--short-side", type=int, help="stored short side (default: data.augment.resize_size)")
    parser.add_argument("--chunk-gib", type=float, default=1.0, help="chunk file size in GiB (default 1)")
    parser.add_argument("--workers", type=int, help="decoding processes (default: data.num_workers)")
    parser.add_argument("--update", action="store_true",
                        help="bring an existing cache in --out up to date: decode only new, changed and previously "
                             "unreadable videos")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> FrameCache:
    """Build the cache; returns it."""
    args = parse_args(argv)
    if args.chunk_gib <= 0 or (args.workers is not None and args.workers < 0) or (
            args.short_side is not None and args.short_side < 1):
        raise UsageError("--chunk-gib must be > 0, --workers >= 0 and --short-side >= 1")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file: a frame cache is a folder")
    config = load_config(args.config, list(args.overrides))
    setup_logging(is_main=True)  # says what an update decodes, and which videos are unreadable
    data = config.data
    data.frame_cache = None  # this command reads the videos themselves, whatever cache the config names
    if data.source != "video":
        raise ValueError(f"data.source is {data.source!r}: only video files can be cached")
    records: list[VideoRecord | str] = []
    for name in (["train", "val"] if args.split == "both" else [args.split]):
        split = getattr(data, name)
        if split.annotations is not None:
            annotations = load_split(data, split, name, for_cache=True)
            # The training split's missing files too: the cache records them as missing, so a run from it says so
            records += [*annotations.records, *(path for path, _ in annotations.left_out)]
    if not records:
        raise ValueError("no annotations to cache: set data.train.annotations and/or data.val.annotations")
    short_side = args.short_side or data.augment.resize_size
    cache = build_frame_cache(records, args.out, short_side=short_side, chunk_bytes=int(args.chunk_gib * 2**30),
                              backend=data.decode_backend, progress=True,
                              workers=data.num_workers if args.workers is None else args.workers, update=args.update)
    missing = [entry[0] for entry in cache.skipped if entry[2:3] == ["missing"]]
    unreadable = [entry[:2] for entry in cache.skipped if entry[2:3] != ["missing"]]
    counts = f"{len(missing)} missing, " * bool(missing) + f"{len(unreadable)} unreadable" * bool(unreadable)
    print(f"cached {len(cache)} videos at short side {short_side} in {args.out}; not cached: "
          f"{counts.removesuffix(', ') or 'none'}")
    for path, reason in unreadable:
        print(f"  {path} ({reason})")
    for path in missing:
        print(f"  {path} (missing)")
    if cache.unreferenced_bytes:
        print(f"{cache.unreferenced_bytes / 2**20:.1f} MiB of old frames of re-cached videos stay in the chunk files; "
              "building without --update reclaims them")
    print(f"use it with: data.frame_cache={args.out}")
    return cache


if __name__ == "__main__":
    main()
