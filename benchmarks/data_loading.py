"""How fast adaptkit's data pipeline turns Kinetics-like files into training clips, against what decoding must cost.

    python -m benchmarks.data_loading            # ~4 min on 2 cores; writes benchmarks/results/data_loading.json
    python -m benchmarks.data_loading --quick    # 340x256 files, fewer samplers, ~1 min

Test files (written once into ``--workdir``): 10 s at 25 fps, 340x256 and 1280x720, H.264 with keyframe intervals
(GOP) 12, 32 and 250 (x264's default B-frames), and VP9 WebM (libvpx's default GOP) as SSv2 has it. The content is a
moving texture, so that motion compensation works as in real footage.

Two tables:

1. **Decode, per clip, one core** for every file x sampler x backend: milliseconds to decode one sampled clip's
   frames (the dataset's cached index, as in training), next to the *floor*: the time to decode just the frames from
   the keyframe before the first needed frame to the last needed one (PyAV, one thread, every picture decoded, only
   the needed ones converted to RGB). ``floor_ratio`` = floor time / decode time (>= 1 means faster than the floor,
   possible because non-reference frames that are not needed are skipped and groups of frames are sought apart).
2. **DataLoader clips/s** on the 340x256 GOP-32 files with ``DenseSampler(8, 16)`` and the Kinetics augmentation at
   224, per worker count, for adaptkit's pipeline and for the pipeline as it was before seeking ("baseline": decode
   from the start of the file, resize after decoding), with the decode and transform shares measured in-process.
   Steady state, as from the second epoch on: every file's frame count / index is known (``probe_ms`` is the
   one-time cost of probing a file).

The development machine is shared with other jobs: absolute figures are noisy, ratios measured in the same process
are the thing to read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from adaptkit.data import (
    AugmentConfig,
    DenseSampler,
    SegmentSampler,
    VideoClipDataset,
    VideoRecord,
    VideoTrainTransform,
    count_frames,
    decode_frames,
    encoder_available,
    probe_video,
    torchcodec_available,
)

FPS, SECONDS = 25, 10
SIZES = {"340x256": (340, 256), "1280x720": (1280, 720)}
ENCODINGS = ["h264_gop12", "h264_gop32", "h264_gop250", "vp9"]
SAMPLERS = {
    "dense 8x16 train": DenseSampler(8, 16),
    "dense 16x8 train": DenseSampler(16, 8),
    "dense 32x4 train": DenseSampler(32, 4),
    "dense 8x16 test x3": DenseSampler(8, 16, num_clips=3, test_mode=True),
    "dense 16x8 test x3": DenseSampler(16, 8, num_clips=3, test_mode=True),
    "dense 32x4 test x3": DenseSampler(32, 4, num_clips=3, test_mode=True),
    "segment 8 train": SegmentSampler(8),
    "segment 16 train": SegmentSampler(16),
    "segment 32 train": SegmentSampler(32),
}
QUICK_SAMPLERS = ["dense 8x16 train", "dense 8x16 test x3", "segment 16 train"]


def write_test_file(path: Path, width: int, height: int, encoding: str) -> None:
    """10 s of a texture moving 2 px per frame, with some blocks changing, encoded as ``encoding``."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 2, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(texture, 16, axis=0), 16, axis=1)[:height]
    if encoding == "vp9":
        codec, options = "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"}
    else:
        gop = encoding.removeprefix("h264_gop")
        codec, options = "libx264", {"preset": "veryfast", "crf": "23", "g": gop, "keyint_min": gop,
                                     "sc_threshold": "0"}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options
        for i in range(FPS * SECONDS):
            image = np.roll(texture, 2 * i, axis=1)[:, :width]
            if i % 10 == 0:  # a patch of new content now and then
                y, x = rng.integers(0, height - 32), rng.integers(0, width - 32)
                texture[y : y + 32, x : x + 32] = rng.integers(0, 256, size=3, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_files(workdir: Path, sizes: list[str], encodings: list[str]) -> dict[str, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    files = {}
    for size in sizes:
        for encoding in encodings:
            if encoding == "vp9" and not encoder_available("libvpx-vp9"):
                continue
            path = workdir / f"{size}_{encoding}.{'webm' if encoding == 'vp9' else 'mp4'}"
            if not path.exists():
                write_test_file(path, *SIZES[size], encoding)
            files[f"{size} {encoding}"] = path
    return files


def floor_seconds(path: Path, wanted: np.ndarray, index) -> float:
    """Decode every picture from the keyframe before the first wanted frame to the last wanted one (one thread)."""
    wanted_pts = set(index.pts_of(wanted).tolist())
    last_pts = int(index.pts_of(wanted[-1:])[0])
    start = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.codec_context.thread_count = "NONE", 1
        container.seek(int(index.pts_of(wanted[:1])[0]), stream=stream)
        for frame in container.decode(stream):
            if frame.pts in wanted_pts:
                frame.to_ndarray(format="rgb24")
            if frame.pts >= last_pts:
                break
    return time.perf_counter() - start


def decode_table(files: dict[str, Path], samplers: list[str], backends: list[str], budget: float) -> list[dict]:
    rows = []
    for name, path in files.items():
        index = probe_video(path)
        for sampler_name in samplers:
            sampler = SAMPLERS[sampler_name]
            rng = np.random.default_rng(0)
            draws = [np.unique(sampler(index.num_frames, rng)) for _ in range(3)]
            floors, times = [], {backend: [] for backend in backends}
            spent = 0.0
            for wanted in draws:  # at least one draw; more while within the time budget of this cell
                floors.append(floor_seconds(path, wanted, index))
                for backend in backends:
                    start = time.perf_counter()
                    decode_frames(path, wanted, backend, index=index, threads=1)
                    times[backend].append(time.perf_counter() - start)
                spent += floors[-1] + sum(t[-1] for t in times.values())
                if spent > budget:
                    break
            floor = statistics.median(floors)
            for backend in backends:
                decode = statistics.median(times[backend])
                rows.append(dict(file=name, sampler=sampler_name, backend=backend, frames=int(draws[0].size),
                                 decode_ms=round(1e3 * decode, 2), floor_ms=round(1e3 * floor, 2),
                                 floor_ratio=round(floor / decode, 3), draws=len(times[backend])))
            print(f"  {name:22s} {sampler_name:20s} floor {1e3 * floor:7.1f} ms  " + "  ".join(
                f"{b} {r['decode_ms']:7.1f} ms ({r['floor_ratio']:.2f}x floor)"
                for b, r in zip(backends, rows[-len(backends):])), flush=True)
    return rows


class BaselineClips(Dataset):
    """adaptkit's training dataset as it was before seeking: per-worker frame counts, decode from the file start,
    full-size frames resized by the transform."""

    def __init__(self, paths: list[str], sampler, transform, backend: str) -> None:
        self.paths, self.sampler, self.transform, self.backend = paths, sampler, transform, backend
        self.counts: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        if index not in self.counts:
            self.counts[index] = count_frames(self.paths[index])
        indices = self.sampler(self.counts[index], np.random.default_rng(index))
        clip = decode_frames(self.paths[index], indices, self.backend, seek=False)
        return self.transform(clip), 0, index


def loader_table(path: Path, workers: list[int], backends: list[str], clips: int) -> list[dict]:
    """clips/s through a DataLoader (batch 8) for the current and the baseline pipeline, plus in-process shares."""
    transform = VideoTrainTransform(AugmentConfig.kinetics())
    sampler = SAMPLERS["dense 8x16 train"]
    paths = [str(path)] * clips  # one file, many items: every item opens, probes (baseline) and decodes it anew
    rows = []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for backend in backends:
        pipelines = {
            "adaptkit": lambda: VideoClipDataset([VideoRecord(p, 0, str(i)) for i, p in enumerate(paths)], sampler,
                                                 transform, seed=0, backend=backend, decode_threads=1),
            "baseline": lambda: BaselineClips(paths, sampler, transform, backend),
        }
        warm = pipelines["adaptkit"]()
        start = time.perf_counter()
        warm.files.video_index(0)
        probe_ms = 1e3 * (time.perf_counter() - start)
        for i in range(1, len(paths)):  # steady state (epoch 2 on): every file's index is known
            warm.files.video_index(i)
        pipelines["adaptkit"] = lambda: warm
        counts = {i: count_frames(p) for i, p in enumerate(paths)}
        make_baseline = pipelines["baseline"]

        def warm_baseline():
            dataset = make_baseline()
            dataset.counts.update(counts)  # the baseline counted each file once per worker, then kept it
            return dataset

        pipelines["baseline"] = warm_baseline
        for pipeline, make in pipelines.items():
            # Shares in one process: decode (incl. probing and decoder-side resize) vs the transform.
            dataset = make()
            decode_s = transform_s = 0.0
            for i in range(min(clips, 12)):
                start = time.perf_counter()
                if pipeline == "adaptkit":
                    files = dataset.files
                    begin, length = files.window(i)
                    clip = files.decode(i, sampler(length, np.random.default_rng(i)) + begin)
                else:
                    clip = decode_frames(paths[i], sampler(counts[i], np.random.default_rng(i)), backend, seek=False)
                middle = time.perf_counter()
                transform(clip)
                decode_s, transform_s = decode_s + middle - start, transform_s + time.perf_counter() - middle
            for num_workers in workers:
                loader = DataLoader(make(), batch_size=8, num_workers=num_workers)
                start = time.perf_counter()
                served = sum(len(batch[0]) for batch in loader)  # includes starting the workers, as an epoch does
                elapsed = time.perf_counter() - start
                busy = min(max(num_workers, 1), cores)
                rows.append(dict(backend=backend, pipeline=pipeline, workers=num_workers, probe_ms=round(probe_ms, 1),
                                 clips_per_s=round(served / elapsed, 2), clips_per_s_per_core=round(served / elapsed / busy, 2),
                                 decode_share=round(decode_s / (decode_s + transform_s), 3),
                                 transform_share=round(transform_s / (decode_s + transform_s), 3)))
                print(f"  {backend:10s} {pipeline:8s} workers {num_workers}: {rows[-1]['clips_per_s']:6.1f} clips/s "
                      f"({rows[-1]['clips_per_s_per_core']:.1f} per core), decode {rows[-1]['decode_share']:.0%} "
                      f"transform {rows[-1]['transform_share']:.0%}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="340x256 files, 3 samplers, workers 0 and 2")
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/results/data_loading_files"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/data_loading.json"))
    parser.add_argument("--backends", nargs="+", default=None, help="default: pyav, plus torchcodec if it loads")
    parser.add_argument("--workers", nargs="+", type=int, default=None)
    args = parser.parse_args()
    backends = args.backends or (["pyav", "torchcodec"] if torchcodec_available() else ["pyav"])
    sizes = ["340x256"] if args.quick else list(SIZES)
    samplers = QUICK_SAMPLERS if args.quick else list(SAMPLERS)
    workers = args.workers or ([0, 2] if args.quick else [0, 1, 2])
    torch.set_num_threads(1)  # one core per decoder, as a DataLoader worker has

    started = time.perf_counter()
    files = test_files(args.workdir, sizes, ENCODINGS)
    print(f"test files ready in {time.perf_counter() - started:.0f} s; backends {backends}", flush=True)
    print("decode per clip, one core:", flush=True)
    decode_rows = decode_table(files, samplers, backends, budget=0.4 if args.quick else 0.6)
    print("DataLoader, 340x256 GOP 32, dense 8x16, Kinetics augmentation at 224, batch 8:", flush=True)
    loader_rows = loader_table(files["340x256 h264_gop32"], workers, backends, clips=24 if args.quick else 48)
    result = dict(
        machine=dict(platform=platform.platform(), cores=len(os.sched_getaffinity(0)), shared=True,
                     torch=torch.__version__, av=av.__version__),
        note="shared development machine: absolute figures are noisy; compare ratios from the same run",
        quick=args.quick, seconds=round(time.perf_counter() - started, 1),
        decode=decode_rows, loader=loader_rows,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
