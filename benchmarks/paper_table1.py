"""AIM's Table 1 (effectiveness of components) and Figure 3 (data efficiency) on the embedded task.

    python -m benchmarks.paper_table1            # 3 seeds, 42 runs, 2 at a time
    python -m benchmarks.paper_table1 --quick    # 1 seed, fewer videos and steps, a few minutes
    python -m benchmarks.paper_table1 --device cuda
    python -m benchmarks.paper_table1 --strategies timesformer --lr 2e-4 --seeds 0 --fractions 1   # one lr of a sweep

Every row is the default config (``recipes/configs/embedded_actions.yaml``: a small ViT pretrained on generated
still images, adapted to generated action videos whose classes come in time-reversed pairs) with another strategy,
trained and evaluated the same way on the held-out videos by the train recipe. Rows: frozen space-only (linear
probe), finetuned space-only, finetuned space-time (TimeSformer), AIM with spatial adaptation only, + temporal,
+ joint (full AIM), and any further strategy registered under a name in :data:`EXTRA_ROWS`. Figure 3 trains AIM and
TimeSformer on 10/25/50/100% of the training videos for the same number of epochs. Each number is the mean +- std
over seeds.

``reversal`` is the accuracy between a class and its time-reversed partner, over the videos predicted in the right
pair: a model blind to frame order sees the same frames in a video and in its reversal, so it scores exactly 50%
there, and at most 50% top-1 overall (the order-blind ceiling).

Writes ``benchmarks/results/paper_table1.json`` (``rows``, ``data_efficiency``, settings), ``paper_table1.md`` and
``paper_table1.png``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from adaptkit.data import EvaluationResult, reversed_partner
from adaptkit.strategies import list_strategies, make_strategy
from benchmarks._cli import ArgumentParser
from benchmarks._results import RESULTS, describe_device, write_json
from recipes._builders import build_video_model, create_image_model
from recipes._config import RecipeConfig, load_config, validate
from recipes._distributed import setup, teardown
from recipes._embedded import prepare
from recipes.train import TrainRecipe

ORDER_BLIND_CEILING = 0.5  # every class has a time-reversed partner holding the same frames


@dataclass(frozen=True)
class Row:
    method: str  # as in the paper's Table 1
    strategy: str
    options: dict[str, Any] = field(default_factory=dict)  # over the config's options that the strategy knows
    lr: float | None = None  # the row's own AdamW lr (None: the config's); see ROWS


# Finetuning every weight of the backbone fails at the adapters' lr (2e-3: space-only 20.5%, TimeSformer 9.7%, about
# chance). The finetuned rows train at the best lr of a sweep over 1e-4, 2e-4 and 5e-4 (seed 0, --strategies / --lr,
# benchmarks/README.md), as the paper gives its full-finetuning baselines their own recipe.
ROWS = (
    Row("Frozen space-only (linear probe)", "linear-probe"),
    Row("Finetuned space-only", "space-only", lr=5e-4),
    Row("Finetuned space-time (TimeSformer)", "timesformer", lr=2e-4),
    Row("Frozen + spatial adaptation", "aim", {"temporal": False, "joint": False, "temporal_in": False}),
    Row("+ temporal adaptation", "aim", {"joint": False}),
    Row("+ joint adaptation (AIM)", "aim"),
)
# The other adapter methods also train at the best lr of their own sweep (seed 0; benchmarks/README.md): ST-Adapter
# over 5e-4 to 2e-2 (best 5e-3; 84.2% at AIM's 2e-3), Zero-I2V over 5e-4 to 5e-3 (best 1e-3; 60.5% at 2e-3).
EXTRA_ROWS = (Row("ST-Adapter", "st-adapter", lr=5e-3), Row("Zero-I2V", "zero-i2v", lr=1e-3))  # shown when registered
FIGURE3_STRATEGIES = ("+ joint adaptation (AIM)", "Finetuned space-time (TimeSformer)")
FRACTIONS = (0.1, 0.25, 0.5, 1.0)
# Every run is the main command's training (the config as it is); a share of the data keeps its epochs, so 10% of the
# videos trains a tenth of the steps, as subsampling a real dataset under a fixed recipe does.
FULL: list[str] = []
QUICK = [  # one seed, a quarter of the videos, fewer steps, a shorter image pretraining: a few minutes
    "data.generated.train_videos=400", "data.generated.val_videos=200", "train.epochs=6",
    "model.pretrain.steps=400",
]


def row_options(config: RecipeConfig, row: Row) -> dict[str, Any]:
    """The config's strategy options that ``row.strategy`` accepts, updated with the row's own."""
    known = {f.name for f in dataclasses.fields(make_strategy(row.strategy, {}))}
    options = {k: v for k, v in config.model.options.items() if k in known and v is not None}
    return {**options, **row.options}


def run_config(config: RecipeConfig, row: Row, seed: int, fraction: float, output: Path) -> RecipeConfig:
    changed = copy.deepcopy(config)
    changed.model.strategy, changed.model.options = row.strategy, row_options(config, row)
    changed.train.seed, changed.data.train_fraction = seed, fraction
    changed.optim.lr = config.optim.lr if row.lr is None else row.lr
    changed.train.output_dir, changed.train.overwrite, changed.controls = str(output), True, []
    validate(changed)
    return changed


def parameter_counts(config: RecipeConfig, num_classes: int) -> tuple[int, int]:
    image_model, _ = create_image_model(config.model)
    model = build_video_model(config, image_model, num_classes)
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


def reversal_accuracy(result: EvaluationResult) -> float | None:
    """Correct direction among the videos predicted in the right time-reversed pair (order-blind: exactly 0.5);
    None when no video is predicted in its pair."""
    in_pair = [(label, pred) for label, pred in zip(result.labels, result.predictions)
               if pred in (label, reversed_partner(label))]
    return sum(label == pred for label, pred in in_pair) / len(in_pair) if in_pair else None


def train_and_evaluate(config: RecipeConfig, log_file: Path) -> dict[str, float]:
    """One run of the train recipe (its output to ``log_file``); the held-out accuracies and wall time."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    world = setup(config.train.device)
    with open(log_file, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        summary = TrainRecipe(config, world).run()
    result = EvaluationResult.from_json(Path(summary["run_dir"]) / "eval_result.json")
    return {"top1": result.top1, "top5": result.top5, "reversal": reversal_accuracy(result),
            "seconds": summary["wall_time_s"]}


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample std; the std is None for one value (one seed has no spread to report)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarise(runs: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    values = [100 * r[key] for r in runs if r[key] is not None]
    if not values:
        return {f"{key}_mean": None, f"{key}_std": None}
    mean, std = mean_std(values)
    return {f"{key}_mean": round(mean, 2), f"{key}_std": None if std is None else round(std, 2)}


def cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def markdown(report: dict[str, Any]) -> str:
    num_classes = report["num_classes"]
    top5 = num_classes > 5
    head = "| Method | Strategy | lr | Params (K) | Tunable (K) | Top-1 (%) |" + (" Top-5 (%) |" if top5 else "") + \
        " Reversal (%) | Train s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in report["rows"]:
        cells = [row["method"], f"`{row['strategy']}`", f"{row['lr']:g}", f"{row['params'] / 1e3:.0f}",
                 f"{row['tunable'] / 1e3:.1f}",
                 cell(row["top1_mean"], row["top1_std"])]
        if top5:
            cells.append(cell(row["top5_mean"], row["top5_std"]))
        cells += [cell(row["reversal_mean"], row["reversal_std"]), f"{row['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if not report["data_efficiency"]:  # none of the rows is one of Figure 3's strategies
        return "\n".join(lines) + "\n"
    lines += ["", "Data efficiency (Figure 3), top-1 (%), the same epochs on a share of the training videos:", "",
              "| Strategy | " + " | ".join(f"{100 * f:g}%" for f in report["fractions"]) + " |",
              "|---|" + "---|" * len(report["fractions"])]
    for strategy in dict.fromkeys(p["strategy"] for p in report["data_efficiency"]):
        points = [p for p in report["data_efficiency"] if p["strategy"] == strategy]
        lines.append(f"| {strategy} | " + " | ".join(cell(p["top1_mean"], p["top1_std"]) for p in points) + " |")
    return "\n".join(lines) + "\n"


def figure(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, curves) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1.4, 1]})
    rows = report["rows"]
    positions = range(len(rows))
    bars.barh(list(positions), [r["top1_mean"] for r in rows], xerr=[r["top1_std"] or 0 for r in rows],
              color="#4c72b0")
    bars.set_yticks(list(positions), [r["method"] for r in rows], fontsize=8)
    bars.invert_yaxis()
    bars.axvline(100 * ORDER_BLIND_CEILING, color="black", linestyle="--", linewidth=1, label="order-blind ceiling")
    bars.axvline(100 / report["num_classes"], color="grey", linestyle=":", linewidth=1, label="chance")
    for y, r in zip(positions, rows):
        bars.text(r["top1_mean"] + 1, y, f"{r['top1_mean']:.1f}", va="center", fontsize=8)
    bars.set_xlim(0, 105)
    bars.set_xlabel("top-1 on held-out videos (%)")
    bars.set_title("Table 1 on the embedded task")
    bars.legend(fontsize=8, loc="lower right")
    for strategy in dict.fromkeys(p["strategy"] for p in report["data_efficiency"]):
        points = [p for p in report["data_efficiency"] if p["strategy"] == strategy]
        curves.errorbar([100 * p["fraction"] for p in points], [p["top1_mean"] for p in points],
                        yerr=[p["top1_std"] or 0 for p in points], marker="o", capsize=3, label=strategy)
    curves.set_xscale("log")
    curves.set_xticks([100 * f for f in report["fractions"]], [f"{100 * f:g}%" for f in report["fractions"]])
    curves.set_xlabel("share of the training videos")
    curves.set_ylabel("top-1 (%)")
    curves.set_title("Figure 3: data efficiency")
    curves.legend(fontsize=8)
    spread = "one seed (no spread)" if len(report["seeds"]) == 1 else f"mean ± std over {len(report['seeds'])} seeds"
    fig.suptitle(f"{spread}; {report['machine']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = ArgumentParser(prog="python -m benchmarks.paper_table1", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, fewer videos and steps")
    parser.add_argument("--config", default="embedded_actions", help="config name or YAML path")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2; --quick: 0)")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2: one per core of the CI CPU)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="folder for paper_table1.{json,md,png}")
    parser.add_argument("--runs", type=Path, default=Path("runs/paper_table1"), help="folder for the run folders")
    parser.add_argument("--strategies", nargs="+", metavar="STRATEGY",
                        help="only the rows of these strategies (default: every row)")
    parser.add_argument("--lr", type=float, help="this AdamW lr for every run, the rows' own included (lr sweeps)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value for every run")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:  # say so now, not after 15 minutes of training
        parser.exit(2, f"{parser.prog}: error: the figure needs matplotlib: pip install -e '.[bench]'\n")
    rows = list(ROWS) + [r for r in EXTRA_ROWS if r.strategy in list_strategies()]
    rows = [dataclasses.replace(r, lr=args.lr or r.lr) for r in rows
            if args.strategies is None or r.strategy in args.strategies]
    if not rows:
        parser.error(f"no row has a strategy in {args.strategies}; rows' strategies: "
                     f"{', '.join(dict.fromkeys(r.strategy for r in ROWS + EXTRA_ROWS))}")
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    overrides = (QUICK if args.quick else FULL) + [f"train.device={args.device}", "data.num_workers=0",
                                                 "eval.num_workers=0"] + list(args.overrides)
    started = time.perf_counter()
    world = setup(args.device)
    try:
        config, prepared = prepare(load_config(args.config, overrides), world.device)
        num_classes = len(config.data.options["classes"])
        fractions = sorted(set(args.fractions) | {1.0})
        jobs = [(row, seed, 1.0) for row in rows for seed in seeds]
        jobs += [(row, seed, fraction) for row in rows if row.method in FIGURE3_STRATEGIES
                 for fraction in fractions if fraction < 1 for seed in seeds]
        results: dict[tuple[str, float], list[dict[str, float]]] = {}
        # Independent runs, `--jobs` at a time in worker processes (one CPU thread each on CPU).
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
            futures = {}
            for row, seed, fraction in jobs:
                folder = args.runs / row.method.replace(" ", "_").replace("(", "").replace(")", "").replace(
                    "+", "plus") / f"f{fraction:g}_s{seed}"
                run = run_config(config, row, seed, fraction, folder)
                futures[pool.submit(train_and_evaluate, run, folder.with_suffix(".log"))] = (row, seed, fraction)
            for future in tqdm(as_completed(futures), total=len(futures), desc="paper_table1", unit="run",
                               dynamic_ncols=True):
                row, seed, fraction = futures[future]
                done = future.result()
                results.setdefault((row.method, fraction), []).append({**done, "seed": seed})
                reversal = "-" if done["reversal"] is None else f"{100 * done['reversal']:.1f}%"
                tqdm.write(f"{row.method:<36s} seed {seed} {100 * fraction:>4g}%: top-1 {100 * done['top1']:.1f}% "
                           f"reversal {reversal} ({done['seconds']:.0f} s)")
        for runs in results.values():
            runs.sort(key=lambda r: r["seed"])
        table = []
        for row in rows:
            runs = results[(row.method, 1.0)]
            counted = run_config(config, row, 0, 1.0, args.runs / "count")
            params, tunable = parameter_counts(counted, num_classes)
            table.append({"method": row.method, "strategy": row.strategy, "options": row_options(config, row),
                          "lr": counted.optim.lr,
                          "params": params, "tunable": tunable, **summarise(runs, "top1"), **summarise(runs, "top5"),
                          **summarise(runs, "reversal"),
                          "train_seconds": round(statistics.fmean(r["seconds"] for r in runs), 1),
                          "top1_per_seed": [round(100 * r["top1"], 2) for r in runs],
                          "reversal_per_seed": [None if r["reversal"] is None else round(100 * r["reversal"], 2)
                                                for r in runs]})
        efficiency = [{"strategy": row.method, "fraction": fraction, **summarise(results[(row.method, fraction)], "top1")}
                      for row in rows if row.method in FIGURE3_STRATEGIES for fraction in fractions]
        report = {
            "task": "embedded action videos (adaptkit.data.actions): 10 classes in 5 time-reversed pairs",
            "config": args.config, "overrides": overrides, "quick": args.quick, "seeds": seeds,
            "fractions": fractions, "num_classes": num_classes, "order_blind_ceiling": 100 * ORDER_BLIND_CEILING,
            "image_model": prepared.get("image_model"), "videos": prepared.get("videos"),
            "train_steps": config.train.max_steps or config.train.epochs * (
                len(Path(config.data.train.annotations).read_text().splitlines()) // config.train.global_batch_size),
            "machine": f"{describe_device('cpu').split(',')[0]}, {os.cpu_count()} CPUs, {args.jobs} runs at a time, "
                       f"{world.device}",
            "wall_seconds": round(time.perf_counter() - started, 1),
            "rows": table, "data_efficiency": efficiency,
        }
    finally:
        teardown()
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(report, args.output / "paper_table1.json", announce=False, device=str(world.device))
    (args.output / "paper_table1.md").write_text(markdown(report), encoding="utf-8")
    figure(report, args.output / "paper_table1.png")
    print(markdown(report))
    print(f"wrote {args.output}/paper_table1.{{json,md,png}} in {report['wall_seconds'] / 60:.1f} min")
    return report


if __name__ == "__main__":
    main()
