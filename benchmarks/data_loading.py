"""How fast adaptkit's data pipeline turns Kinetics-like files into training clips, against what decoding must cost.

    python -m benchmarks.data_loading            # ~3 min (+1 min writing the files the first time); run it as
                                                 # `taskset -c 1 python -m ...` to stay on one core;
                                                 # writes benchmarks/results/data_loading.json
    python -m benchmarks.data_loading --quick    # 340x256 files, 3 samplers, ~30 s
    python -m benchmarks.data_loading --augment-device cuda   # only the GPU-side augmentation throughput
    python -m benchmarks.data_loading --decode-device cuda    # only GPU decoding (NVDEC) + augmentation, end to end

Test files (written once into ``--workdir``): 10 s at 25 fps, 340x256 and 1280x720, H.264 with keyframe intervals
(GOP) 12, 32 and 250 (x264's default B-frames), and VP9 WebM (libvpx's default GOP) as SSv2 has it. The content is a
moving texture, so that motion compensation works as in real footage.

Three tables:

1. **Decode, per clip, one core** for every file x sampler x backend: milliseconds to decode one sampled clip's
   frames (the dataset's cached index, as in training), next to the *floor*: the time to decode just the frames from
   the keyframe before the first needed frame to the last needed one (PyAV, one thread, every picture decoded, only
   the needed ones converted to RGB; the file opened as adaptkit opens it). ``floor_ratio`` = floor time / decode time (>= 1 means faster than the floor,
   possible because pictures that no needed frame refers to are not decoded and groups of frames are sought apart).
2. **One clip, one core** on the 340x256 GOP-32 files with ``DenseSampler(8, 16)`` and the Kinetics augmentation at
   224: clips/s per core with the decode and transform shares, for adaptkit's pipeline, for the pipeline as it was
   when the data-loading issue was filed ("baseline": decode from the start of the file at full size, stack, copy to
   contiguous (T, C, H, W), the transform after), and for reading the pre-decoded frame cache ("frame_cache", warm
   page cache), interleaved draw by draw in one process; and the decode time against the floor and against a
   *bound*: keyframes, P-frames up to each GOP's last needed frame and the needed frames alone, every other B-frame
   skipped (below what any frame-exact decoder needs, as B-pyramid references are skipped too). Steady state, as
   from the second epoch on: every file's index is known (``probe_ms_once_per_file`` is the one-time cost).
3. **DataLoader clips/s** for both pipelines per worker count, timed after the first batch (wall clock).

Tables 1 and 2 time CPU seconds of this process (``time.process_time``; one decoding thread, one torch thread):
clips/s per core is 1 / CPU seconds per clip, and other jobs sharing the core do not inflate it (they still share
caches, so expect a few percent of noise). The development machine is shared with other jobs: ratios measured in the
same process are the thing to read.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
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
    FrameCache,
    GPUDecodingUnavailable,
    SegmentSampler,
    VideoClipDataset,
    VideoRecord,
    VideoTrainTransform,
    build_frame_cache,
    check_gpu_decoding,
    decode_frames,
    encoder_available,
    prepare_batch,
    probe_video,
    torchcodec_available,
)
from adaptkit.data import open_video_stream
from benchmarks._cli import ArgumentParser
from benchmarks._results import RESULTS, write_json

DEFAULT_OUT = RESULTS / "data_loading.json"
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
# CPU seconds of this process: per-core cost, not inflated by other jobs on a shared core.
CLOCK = time.process_time


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
    start = CLOCK()
    container, stream = open_video_stream(str(path), 1, index.reorder_depth)  # opened as adaptkit opens files
    with container:
        container.seek(int(index.pts_of(wanted[:1])[0]), stream=stream)
        for frame in container.decode(stream):
            if frame.pts in wanted_pts:
                frame.to_ndarray(format="rgb24")
            if frame.pts >= last_pts:
                break
    return CLOCK() - start


def bound_seconds(path: Path, wanted: np.ndarray, index) -> float:
    """Decode only the keyframes, the P-frames up to each GOP's last wanted frame and the wanted frames (one thread).

    Every B-frame that is not wanted is skipped, B-pyramid references included, so wanted B-frames may come out
    wrong: this is not a decoder, it bounds from below what any frame-exact decoder of these frames must do.
    """
    wanted_pts = set(index.pts_of(wanted).tolist())
    start = CLOCK()
    container, stream = open_video_stream(str(path), 1, index.reorder_depth)
    with container:
        context = stream.codec_context
        container.seek(int(index.pts_of(wanted[:1])[0]), stream=stream)
        unfed, held, frames = set(wanted_pts), [], []
        for packet in container.demux(stream):
            if packet.size == 0:
                break
            if packet.is_keyframe:
                held.clear()  # a GOP's tail after its last wanted frame
            if packet.pts in unfed:
                context.skip_frame = "BIDIR"
                frames += [frame for earlier in held for frame in context.decode(earlier)]
                context.skip_frame = "DEFAULT"
                frames += context.decode(packet)
                held.clear()
                unfed.discard(packet.pts)
                if not unfed:
                    break
            else:
                held.append(packet)
        for frame in [*frames, *context.decode(None)]:
            if frame.pts in wanted_pts:
                frame.to_ndarray(format="rgb24")
    return CLOCK() - start


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
                    start = CLOCK()
                    decode_frames(path, wanted, backend, index=index, threads=1)
                    times[backend].append(CLOCK() - start)
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


def decode_from_start(path: str, indices: np.ndarray) -> torch.Tensor:
    """PyAV decoding as it was when the data-loading issue was filed (commit 281099b): every picture from the start
    of the file, the wanted ones converted at full size, stacked, and copied into contiguous (T, C, H, W)."""
    wanted, frames, count = set(indices.tolist()), {}, 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.codec_context.thread_count = "NONE", 1
        for frame in container.decode(stream):
            if count in wanted:
                frames[count] = frame.to_ndarray(format="rgb24")
            count += 1
            if count > indices.max():
                break
    video = np.stack([frames[i] for i in indices.tolist()])  # (T, H, W, C)
    return torch.from_numpy(video).permute(0, 3, 1, 2).contiguous()  # (T, C, H, W)


class BaselineClips(Dataset):
    """adaptkit's training dataset as it was when the data-loading issue was filed: decode from the file start at
    full size (PyAV: :func:`decode_from_start`; torchcodec: its exact mode, which scans the file), the transform after
    on contiguous frames. Frame counts per worker, as then (kept across items here: steady state)."""

    def __init__(self, paths: list[str], sampler, transform, backend: str) -> None:
        self.paths, self.sampler, self.transform, self.backend = paths, sampler, transform, backend
        self.indexes: dict[int, object] = {}  # the frame count, per worker (with the index it now comes with)

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, index: int) -> torch.Tensor:
        if index not in self.indexes:
            self.indexes[index] = probe_video(self.paths[index])
        video_index = self.indexes[index]
        indices = self.sampler(video_index.num_frames, np.random.default_rng(index)).reshape(-1)
        if self.backend == "pyav":
            return decode_from_start(self.paths[index], indices)
        return decode_frames(self.paths[index], indices, self.backend, index=video_index, seek=False).contiguous()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(self.decode(index)), 0, index


def pipelines(path: Path, backend: str, clips: int, cache: FrameCache | None = None
              ) -> tuple[dict[str, Dataset], float]:
    """adaptkit's VideoClipDataset, the baseline, and (given a cache) the dataset reading the frame cache, over
    ``clips`` items of one file, in steady state (every file's index known, as from the second epoch on); also the
    one-time probe cost in ms."""
    transform = VideoTrainTransform(AugmentConfig.kinetics())
    sampler = SAMPLERS["dense 8x16 train"]
    paths = [str(path)] * clips
    records = [VideoRecord(p, 0, str(i)) for i, p in enumerate(paths)]
    current = VideoClipDataset(records, sampler, transform, seed=0, backend=backend, decode_threads=1)
    baseline = BaselineClips(paths, sampler, transform, backend)
    start = CLOCK()
    current.files.video_index(0)
    probe_ms = 1e3 * (CLOCK() - start)
    for i in range(clips):
        current.files.video_index(i)
        baseline.indexes[i] = probe_video(paths[i])
    datasets = {"adaptkit": current, "baseline": baseline}
    if cache is not None:
        datasets["frame_cache"] = VideoClipDataset(records, sampler, transform, seed=0, frame_cache=cache)
    return datasets, probe_ms


def clip_table(path: Path, backends: list[str], draws: int, cache: FrameCache) -> list[dict]:
    """One core, in process: decode and transform time per clip for the pipelines, interleaved draw by draw so that
    the machine's load hits them alike; and the floor and bound of the same clips. The frame cache row is measured
    with the first backend's draws (it does not decode)."""
    rows = []
    for backend in backends:
        datasets, probe_ms = pipelines(path, backend, draws, cache if backend == backends[0] else None)
        index = probe_video(path)
        times = {name: ([], []) for name in datasets}
        floors, bounds = [], []
        for i in range(draws):
            for name, dataset in datasets.items():
                start = CLOCK()
                if name == "baseline":
                    clip = dataset.decode(i)
                else:
                    begin, length = dataset.files.window(i)
                    wanted = dataset.sampler(length, dataset._rng(i)) + begin
                    clip = dataset.files.decode(i, wanted)
                middle = CLOCK()
                dataset.transform(clip).contiguous()
                times[name][0].append(middle - start)
                times[name][1].append(CLOCK() - middle)
            floors.append(floor_seconds(path, np.unique(wanted), index))
            bounds.append(bound_seconds(path, np.unique(wanted), index))
        floor, bound = statistics.median(floors), statistics.median(bounds)
        for name, (decode, transform) in times.items():
            decode_s, transform_s = statistics.median(decode), statistics.median(transform)
            row = dict(backend="none (frame cache)" if name == "frame_cache" else backend, pipeline=name,
                       clips_per_s_per_core=round(1 / (decode_s + transform_s), 2),
                       decode_ms=round(1e3 * decode_s, 2), transform_ms=round(1e3 * transform_s, 2),
                       decode_share=round(decode_s / (decode_s + transform_s), 3),
                       transform_share=round(transform_s / (decode_s + transform_s), 3),
                       floor_ms=round(1e3 * floor, 2), floor_ratio=round(floor / decode_s, 3),
                       bound_ms=round(1e3 * bound, 2), bound_ratio=round(bound / decode_s, 3),
                       probe_ms_once_per_file=round(probe_ms, 1), draws=draws)
            rows.append(row)
        base = next(r for r in rows[-len(datasets):] if r["pipeline"] == "baseline")
        for row in rows[-len(datasets):]:
            row["speedup_vs_baseline"] = round(row["clips_per_s_per_core"] / base["clips_per_s_per_core"], 2)
            print(f"  {row['backend']:10s} {row['pipeline']:11s} {row['clips_per_s_per_core']:6.1f} clips/s per core "
                  f"(decode {row['decode_ms']:.1f} ms = {row['decode_share']:.0%}, "
                  f"transform {row['transform_ms']:.1f} ms = {row['transform_share']:.0%}); "
                  f"decode vs floor {row['floor_ratio']:.2f}x, vs bound "
                  f"{row['bound_ratio']:.2f}x; {row['speedup_vs_baseline']:.2f}x the baseline", flush=True)
        best = 1 / (bound + statistics.median(times["adaptkit"][1]))
        print(f"  {backend:10s} at most {best:.1f} clips/s per core with decoding at the bound "
              f"({best / base['clips_per_s_per_core']:.2f}x the baseline)", flush=True)
    return rows


def loader_table(path: Path, workers: list[int], backends: list[str], clips: int, cache: FrameCache
                 ) -> list[dict]:
    """clips/s through a DataLoader (batch 8) per worker count, timed (wall clock) from the first batch on (worker
    start-up left out), for the pipelines (the frame cache with the first backend's run)."""
    rows = []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for backend in backends:
        datasets, _ = pipelines(path, backend, clips, cache if backend == backends[0] else None)
        for name, dataset in datasets.items():
            for num_workers in workers:
                batches = iter(DataLoader(dataset, batch_size=8, num_workers=num_workers))
                next(batches)
                start = time.perf_counter()
                served = sum(len(batch[0]) for batch in batches)
                elapsed = time.perf_counter() - start
                busy = min(max(num_workers, 1), cores)
                rows.append(dict(backend=backend, pipeline=name, workers=num_workers,
                                 clips_per_s=round(served / elapsed, 2),
                                 clips_per_s_per_core=round(served / elapsed / busy, 2)))
                print(f"  {backend:10s} {name:11s} workers {num_workers}: {rows[-1]['clips_per_s']:6.1f} clips/s "
                      f"({rows[-1]['clips_per_s_per_core']:.1f} per busy core)", flush=True)
    return rows


def augment_table(device: str, batch: int, rounds: int) -> dict:
    """Augmentation where the frames are: the Kinetics train transform per clip, then ``prepare_batch`` into a
    (B, C, T, 224, 224) bf16 batch, on ``device``, from decoded 256x340 uint8 clips (8 frames) already there. The GPU
    half of ``data.decode_device=cuda`` (NVDEC decoding itself needs FFmpeg's libraries and is not measured)."""
    transform = VideoTrainTransform(AugmentConfig.kinetics())
    clips = torch.randint(0, 256, (batch, 8, 256, 340, 3), dtype=torch.uint8, device=device).permute(0, 1, 4, 2, 3)
    mean, std = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)

    def step() -> torch.Tensor:
        out = torch.stack([transform(clip) for clip in clips])  # (B, T, C, 224, 224), one crop per clip
        return prepare_batch(out, mean, std, dtype=torch.bfloat16)

    step()  # warm-up (kernels, allocator)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    row = dict(device=device, batch=batch, clips_per_s=round(batch / seconds, 1), shape=list(result.shape),
               dtype=str(result.dtype), threads=torch.get_num_threads())
    print(f"  augmentation on {device}: {row['clips_per_s']:.1f} clips/s into {tuple(result.shape)} {result.dtype}",
          flush=True)
    return row


def gpu_decoding_table(path: Path, device: str, batch: int, clips: int) -> dict:
    """``data.decode_device=cuda`` end to end: ``VideoClipDataset`` decoding with NVDEC (torchcodec) and augmenting on
    the GPU, in the main process, ``DenseSampler(8, 16)`` clips of ``path`` stacked into batches and turned into the
    (B, C, T, 224, 224) bf16 model input by ``prepare_batch``; clips/s after one warm-up batch (wall clock). The data
    issue's target is 400 clips/s from 340x256 files."""
    check_gpu_decoding(device)  # one line saying what is missing
    transform = VideoTrainTransform(AugmentConfig.kinetics())
    records = [VideoRecord(str(path), 0, str(i)) for i in range(clips + batch)]
    dataset = VideoClipDataset(records, SAMPLERS["dense 8x16 train"], transform, seed=0, backend="torchcodec",
                               decode_device=device)
    mean, std = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)

    def step(first: int) -> torch.Tensor:
        clips_ = torch.stack([dataset[i][0] for i in range(first, first + batch)])  # (B, T, C, 224, 224) uint8
        return prepare_batch(clips_, mean, std, dtype=torch.bfloat16)

    step(clips)  # warm-up (NVDEC sessions, kernels, allocator)
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for first in range(0, clips - clips % batch, batch):
        result = step(first)
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    row = dict(device=device, file=path.name, batch=batch, clips=clips - clips % batch,
               clips_per_s=round((clips - clips % batch) / seconds, 1), shape=list(result.shape), dtype=str(result.dtype),
               target_clips_per_s=400)
    print(f"  NVDEC decoding + augmentation on {device}: {row['clips_per_s']:.1f} clips/s into "
          f"{tuple(result.shape)} {result.dtype} (target 400)", flush=True)
    return row


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="340x256 files, 3 samplers, workers 0 and 2")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "adaptkit_data_loading",
                        help="where the test files are written once and reused")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="result JSON (default: benchmarks/results/data_loading.json, --quick: ..._quick.json)")
    parser.add_argument("--backends", nargs="+", default=None, help="default: pyav, plus torchcodec if it loads")
    parser.add_argument("--workers", nargs="+", type=int, default=None)
    parser.add_argument("--clips", type=int, help="items per DataLoader run (default 88, --quick 40); use about "
                        "40 per worker on many cores")
    parser.add_argument("--augment-device", help="only measure the augmentation on this device (e.g. cuda)")
    parser.add_argument("--decode-device", help="only measure GPU decoding (NVDEC) and augmentation on this device")
    args = parser.parse_args()
    if args.decode_device:
        try:
            check_gpu_decoding(args.decode_device)
        except GPUDecodingUnavailable as error:
            print(f"error: {error}", file=sys.stderr)  # one line, exit status 2, as the adaptkit CLI does
            raise SystemExit(2) from None
        path = test_files(args.workdir, ["340x256"], ["h264_gop32"])["340x256 h264_gop32"]
        row = gpu_decoding_table(path, args.decode_device, batch=32, clips=64 if args.quick else 512)
        out = args.out if args.out != DEFAULT_OUT else args.out.with_name(f"data_decode_{args.decode_device}.json")
        write_json(dict(decode=row, machine=platform.platform()), out, device=args.decode_device)
        return
    if args.augment_device:
        if args.augment_device == "cpu":
            torch.set_num_threads(1)  # per core, as in a DataLoader worker
        row = augment_table(args.augment_device, batch=32, rounds=3 if args.quick else 10)
        out = args.out if args.out != DEFAULT_OUT else args.out.with_name(f"data_augment_{args.augment_device}.json")
        write_json(dict(augment=row, machine=platform.platform()), out, device=args.augment_device)
        return
    if args.quick and args.out == DEFAULT_OUT:
        args.out = args.out.with_name("data_loading_quick.json")
    backends = args.backends or (["pyav", "torchcodec"] if torchcodec_available() else ["pyav"])
    sizes = ["340x256"] if args.quick else list(SIZES)
    samplers = QUICK_SAMPLERS if args.quick else list(SAMPLERS)
    workers = args.workers or ([0, 2] if args.quick else [0, 1, 2])
    torch.set_num_threads(1)  # one core per decoder, as a DataLoader worker has

    started, load_at_start = time.perf_counter(), os.getloadavg()
    files = test_files(args.workdir, sizes, ENCODINGS)
    print(f"test files ready in {time.perf_counter() - started:.0f} s; backends {backends}", flush=True)
    print("decode per clip, one core:", flush=True)
    decode_rows = decode_table(files, samplers, backends, budget=0.4 if args.quick else 0.6)
    headline = files["340x256 h264_gop32"]
    # The frame cache of the headline file at the Kinetics transform's short side, as `adaptkit cache` writes it.
    cache = build_frame_cache([headline], args.workdir / "frame_cache", short_side=AugmentConfig.kinetics().resize_size)
    print("One clip, one core, 340x256 GOP 32, dense 8x16, Kinetics augmentation at 224:", flush=True)
    clip_rows = clip_table(headline, backends, draws=8 if args.quick else 48, cache=cache)
    print("DataLoader, same files, batch 8, after the first batch:", flush=True)
    loader_rows = loader_table(headline, workers, backends, clips=args.clips or (40 if args.quick else 88), cache=cache)
    result = dict(
        machine=dict(platform=platform.platform(), cores=len(os.sched_getaffinity(0)),
                     affinity=sorted(os.sched_getaffinity(0)), cores_on_machine=os.cpu_count(), shared=True,
                     load_average_at_start=[round(x, 2) for x in load_at_start], torch=torch.__version__,
                     av=av.__version__),
        note="shared development machine: absolute figures are noisy; compare ratios from the same run",
        clock="decode and clip tables: CPU seconds of this process (time.process_time); loader table: wall clock",
        quick=args.quick, seconds=round(time.perf_counter() - started, 1),
        decode=decode_rows, clip=clip_rows, loader=loader_rows,
    )
    write_json(result, args.out, announce=False, device="cpu")
    print(f"wrote {args.out} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
