"""What the up-front check of a dataset's listed video files costs (``adaptkit.data.check_video_files``).

    python -m benchmarks.missing_files                # 240k rows (Kinetics-400 train), half of them present

Writes ``--rows`` empty files named like Kinetics clips (``--present`` of them; the folder is kept for the next run
unless ``--folder`` is a temporary one) and times ``check_video_files`` over all rows: one stat for a present file,
one per video extension for a missing one (the look under other extensions). The first pass may meet a cold
directory cache; the median of the later ones is the warm figure.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from adaptkit.data import VideoRecord, check_video_files
from benchmarks._cli import ArgumentParser, positive_int
from benchmarks._results import RESULTS, write_json


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = ArgumentParser(prog="python -m benchmarks.missing_files", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=positive_int, default=240_000)
    parser.add_argument("--present", type=float, default=0.5, help="share of the rows whose file exists")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/adaptkit_missing_files"))
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "missing_files.json")
    args = parser.parse_args(argv)
    if not 0 <= args.present <= 1:
        parser.error(f"--present must be in [0, 1], got {args.present}")
    args.folder.mkdir(parents=True, exist_ok=True)
    records = [VideoRecord(str(args.folder / f"yt{i:09d}_{i % 300:06d}_{i % 300 + 10:06d}.mp4"), i % 400, str(i))
               for i in range(args.rows)]
    present = round(args.present * args.rows)
    for record in records[:present]:
        Path(record.path).touch()
    for record in records[present:]:
        Path(record.path).unlink(missing_ok=True)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        check = check_video_files(records)
        seconds.append(time.perf_counter() - start)
    assert len(check.missing) == args.rows - present
    warm = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    result = {"rows": args.rows, "present": present, "seconds_first": round(seconds[0], 3),
              "seconds_warm": round(warm, 3), "us_per_row_warm": round(warm / args.rows * 1e6, 2)}
    print(f"check_video_files over {args.rows} rows ({present} present): first pass {seconds[0]:.2f} s, "
          f"then {warm:.2f} s ({result['us_per_row_warm']} us per row)")
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
