"""Does a model trained on the embedded task name the action of videos longer than any it was trained on?

    adaptkit train                                            # trains runs/embedded_actions/final
    python -m benchmarks.long_videos --checkpoint runs/embedded_actions/final

Renders ``--videos`` generated action videos (every class equally often, forwards and reversed) of ``--seconds`` at
``--fps`` from a seed the training never used, writes them as mp4 files and runs ``recipes.predict`` on each file, the
command a user runs on their own video. Prints top-1 overall and per action pair and writes the result as JSON.
Training videos last 2-6 s at 12-30 fps (at most 180 frames); the default here is 10 s at 30 fps (300 frames).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

from adaptkit.data import (
    ACTION_CLASSES,
    ACTION_PAIRS,
    ActionVideoSettings,
    action_video,
    encode_video,
    reversed_partner,
)
from benchmarks._cli import ArgumentParser
from benchmarks._results import RESULTS, write_json
from recipes import predict
from recipes.cli import one_line


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = ArgumentParser(prog="python -m benchmarks.long_videos", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained run's final/ folder")
    parser.add_argument("--videos", type=int, default=100, help="how many (a multiple of 10: every class alike)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--size", type=int, default=32, help="frame side in pixels (the model's training size)")
    parser.add_argument("--seed", type=int, default=99, help="rendering seed (training uses 0, its held-out set 1)")
    parser.add_argument("--out", type=Path, default=RESULTS / "long_videos.json")
    args = parser.parse_args(argv)
    if args.videos <= 0 or args.videos % len(ACTION_CLASSES):
        parser.error(f"--videos must be a positive multiple of {len(ACTION_CLASSES)}, got {args.videos}")
    num_frames = round(args.seconds * args.fps)
    settings = ActionVideoSettings(size=args.size)
    correct: dict[str, list[bool]] = {forward: [] for forward, _ in ACTION_PAIRS}
    with tempfile.TemporaryDirectory() as folder:
        for pair in range(args.videos // 2):
            video, label, _ = action_video(pair, settings, seed=args.seed, num_frames=num_frames)  # (T, 3, H, W)
            for clip, clip_label in ((video, label), (video.flip(0), reversed_partner(label))):
                path = Path(folder) / f"video_{pair:04d}_{clip_label}.mp4"
                encode_video(path, clip, fps=args.fps, options={"qp": "0", "preset": "ultrafast"})
                try:
                    with contextlib.redirect_stdout(io.StringIO()):  # predict prints its top classes per file
                        (top, _), = predict.main(["--checkpoint", str(args.checkpoint), str(path), "--top-k", "1"])
                except Exception as error:  # noqa: BLE001 - a wrong checkpoint folder: one line, as the CLI says it
                    parser.exit(2, f"benchmarks.long_videos: error: {one_line(error)}\n")
                correct[ACTION_PAIRS[clip_label // 2][0]].append(top == ACTION_CLASSES[clip_label])
    total = sum(sum(v) for v in correct.values())
    report = {"checkpoint": str(args.checkpoint), "videos": args.videos, "seconds": args.seconds, "fps": args.fps,
              "frames": num_frames, "seed": args.seed, "top1": round(100 * total / args.videos, 2),
              "per_pair": {name: f"{sum(v)}/{len(v)}" for name, v in correct.items()}}
    write_json(report, args.out)
    print(f"{args.videos} videos of {args.seconds:g} s at {args.fps} fps ({num_frames} frames): "
          f"top-1 {report['top1']:.1f}%")
    for name, cell in report["per_pair"].items():
        print(f"  {name} (and reversed): {cell}")
    return report


if __name__ == "__main__":
    main()
