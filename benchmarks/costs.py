"""Parameters and inference GMACs of every strategy on paper-size backbones, beside the paper's figures.

    python -m benchmarks.costs            # prints a markdown table, writes benchmarks/results/costs.json

Everything runs on the meta device: no weights, no memory, a few seconds on a laptop CPU. A strategy
written ``name+merge`` is measured after ``video_model.merge()`` (ZeroI2V at inference).
GMACs are multiply-accumulates per the AIM paper's convention ("GFLOPs" in its tables).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch

import adaptkit
from benchmarks._cli import ArgumentParser
from benchmarks._results import RESULTS, write_json


@dataclass
class Row:
    backbone: str
    strategy: str
    options: dict
    classes: int
    frames: int
    views: int
    total_m: float
    tunable_m: float
    gmacs_per_view: float
    gmacs_all_views: float
    paper: str  # the paper's figures for this row, or why there are none


# (timm name, strategy, options, classes, frames, views, paper figures "total / tunable / GFLOPs")
ROWS = [
    # Table 1 is on SSv2: 174 classes, which is what the linear probe's 0.1M tunable head is made of.
    ("vit_base_patch16_clip_224", "linear-probe", {}, 174, 8, 3, "86 / 0.1 / - (Table 1, IN-21K)"),
    ("vit_base_patch16_clip_224", "space-only", {}, 174, 8, 3, "86 / 86 / - (Table 1)"),
    ("vit_base_patch16_clip_224", "timesformer", {}, 174, 8, 3, "121 / 121 / - (Table 1)"),
    ("vit_base_patch16_clip_224", "lora", {"r": 8}, 400, 8, 3, "- (not in the paper)"),
    ("vit_base_patch16_clip_224", "aim", {"spatial": True, "temporal": False, "joint": False}, 174, 8, 3,
     "89 / 3.7 / - (Table 1, +spatial)"),
    ("vit_base_patch16_clip_224", "aim", {"joint": False, "temporal_in": True}, 174, 8, 3,
     "97 / 10.8 / - (Table 1, +temporal)"),
    ("vit_base_patch16_clip_224", "aim", {}, 400, 8, 3, "97 / 11 / 606 (Table 2)"),
    ("vit_base_patch16_clip_224", "aim", {}, 400, 16, 3, "97 / 11 / 1214 (Table 2)"),
    ("vit_base_patch16_clip_224", "aim", {}, 400, 32, 3, "97 / 11 / 2428 (Table 2)"),
    ("vit_base_patch16_clip_224", "aim", {"temporal_in": True, "scale": 1.0}, 174, 8, 3, "100 / 14.3 / 624 (Table 3)"),
    ("vit_base_patch16_clip_224", "aim", {"temporal_in": True, "scale": 1.0}, 174, 16, 3, "100 / 14 / 1248 (Table 3)"),
    ("vit_base_patch16_clip_224", "aim", {"temporal_in": True, "scale": 1.0}, 174, 32, 3, "100 / 14 / 2496 (Table 3)"),
    ("vit_base_patch16_clip_224", "aim", {"layers": "top:6"}, 400, 8, 3, "- / 5.6 / - (Table 7)"),
    ("vit_base_patch16_clip_224", "aim", {"ratio": 0.0625}, 400, 8, 3, "- / 3 / - (Table 8)"),
    ("vit_large_patch14_clip_224", "aim", {}, 400, 8, 3, "341 / 38 / 2802 (Table 2)"),
    ("vit_large_patch14_clip_224", "aim", {}, 400, 16, 3, "341 / 38 / 5604 (Table 2)"),
    ("vit_large_patch14_clip_224", "aim", {}, 400, 32, 3, "341 / 38 / 11208 (Table 2)"),
    ("vit_large_patch14_clip_224", "aim", {"temporal_in": True, "scale": 1.0}, 174, 8, 3,
     "354 / 50 / 2877 (Table 3)"),
    ("vit_large_patch14_clip_224", "aim", {"temporal_in": True, "scale": 1.0}, 174, 16, 3,
     "354 / 50 / 5754 (Table 3)"),
    ("vit_large_patch14_clip_224", "aim", {"temporal_in": True, "scale": 1.0}, 174, 32, 3,
     "354 / 50 / 11508 (Table 3)"),
    ("vit_base_patch16_clip_224", "st-adapter", {}, 400, 8, 3,
     "- / ~7 / 455 (ST-Adapter, NeurIPS'22: ~8% per-task params; 455 GFLOPs per a third-party table)"),
    ("vit_base_patch16_clip_224", "st-adapter", {"positions": "attn+mlp"}, 174, 8, 3,
     "- / ~14 / - (the authors' 24x384 SSv2 setting: adapters before attention and MLP)"),
    ("vit_base_patch16_clip_224", "zero-i2v", {}, 400, 8, 3,
     "- (training: 4 linear adapters per block; the paper gives inference costs only)"),
    ("vit_base_patch16_clip_224", "zero-i2v+merge", {}, 400, 8, 3,
     "86 / 0 extra / 422 (ZeroI2V, ECCV'24: the plain image model at inference, 8x1x3)"),
    ("swin_base_patch4_window7_224", "aim", {}, 400, 8, 1, "- / 9.2 / - (Table 6; no GFLOPs given)"),
    ("swin_base_patch4_window7_224", "aim", {}, 400, 32, 1, "- / 9.2 / - (Table 6; no GFLOPs given)"),
    ("swin_base_patch4_window7_224", "space-only", {}, 400, 8, 1, "- (VideoSwin-B is 88M)"),
]


def measure(name: str, strategy: str, options: dict, classes: int, frames: int, views: int, paper: str) -> Row:
    with torch.device("meta"):
        image_model = timm.create_model(name)
    merge = strategy.endswith("+merge")  # a mergeable strategy measured after video_model.merge()
    video_model = adaptkit.inject(image_model, strategy.removesuffix("+merge"), num_frames=frames, num_classes=classes,
                                  **options)
    if merge:
        video_model.merge()
    total, tunable = adaptkit.count_parameters(video_model)
    per_view = adaptkit.count_flops(video_model, image_size=224, views=1)
    return Row(name, strategy, options, classes, frames, views, round(total / 1e6, 2), round(tunable / 1e6, 3),
               round(per_view, 1), round(per_view * views, 1), paper)


def to_markdown(rows: list[Row]) -> str:
    lines = [
        "| backbone | strategy | options | classes | frames | params (M) | tunable (M) | GMACs/view | GMACs x views | paper: total / tunable / GFLOPs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        options = ", ".join(f"{k}={v}" for k, v in r.options.items()) or "-"
        lines.append(
            f"| {r.backbone} | {r.strategy} | {options} | {r.classes} | {r.frames} | {r.total_m} | {r.tunable_m} | "
            f"{r.gmacs_per_view} | {r.gmacs_all_views} (x{r.views}) | {r.paper} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS / "costs.json")
    args = parser.parse_args(argv)
    rows = [measure(*row) for row in ROWS]
    print(to_markdown(rows))
    write_json({"environment": {"device": "meta (counts only)"}, "rows": [asdict(r) for r in rows]}, args.out)
    return rows


if __name__ == "__main__":
    main()
