"""Train the same model with each assigner on the same data and seed; one table of the results.

    python tools/ablate_assigners.py configs/shapes_atss.py --assigners atss iou grid simota tal \
        [--cfg-options train.epochs=12 ...] [--work-dir work_dirs/ablation]

Everything but ``model.head.loss.assigner`` is the config's (model, data, schedule, seed), so the rows
differ by the assigner alone. For each run: COCO AP, AP50, APs, APm, APl of the EMA weights on the
val split, the training-time assignment statistics of the last epoch (positives per GT, GTs with no
positive), and the wall-clock training time. Writes ``ablation.md`` and ``ablation.csv`` in the work
dir; each run keeps its own sub-folder (checkpoints, curves, metrics).

``--assigners`` takes the short names of ``tools/compare_assigners.py`` (atss, iou, grid, simota, tal)
or any call such as ``"ATSSAssigner(topk=13)"``.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detkit.assigners.presets import assigner_call  # noqa: E402
from detkit.config import ConfigError, load_config  # noqa: E402

COLUMNS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "pos_per_gt", "gt_no_pos_pct", "train_min"]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_")[:60]


def run_one(config: str, name: str, overrides: Sequence[str], work_dir: Path, progress: bool) -> dict[str, float]:
    from detkit.engine.trainer import Trainer

    cfg = load_config(config, [*overrides, f"model.head.loss.assigner={assigner_call(name)}"])
    t0 = time.perf_counter()
    trainer = Trainer(cfg, work_dir=str(work_dir / slug(name)), progress=progress)
    result = trainer.train()
    minutes = (time.perf_counter() - t0) / 60
    metrics = result["last_metrics"] or trainer.evaluate()
    last = trainer.writer.epochs[-1] if trainer.writer.epochs else {}
    num_gt = float(last.get("stat_num_gt", 0.0) or 0.0)
    return {
        **{k: float(metrics.get(k, 0.0)) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
        "pos_per_gt": float(last.get("stat_pos_per_gt", 0.0)),
        "gt_no_pos_pct": 100.0 * float(last.get("stat_gt_no_pos", 0.0)) / num_gt if num_gt else 0.0,
        "train_min": minutes,
    }


def write_table(rows: dict[str, dict[str, float]], work_dir: Path) -> str:
    with open(work_dir / "ablation.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["assigner", *COLUMNS])
        for name, r in rows.items():
            writer.writerow([name, *[f"{r[c]:.4f}" for c in COLUMNS]])
    lines = ["| assigner | AP | AP50 | AP75 | APs | APm | APl | positives / GT | GTs w/o positive (%) | training (min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.3f}" for c in COLUMNS[:6])
                     + f" | {r['pos_per_gt']:.2f} | {r['gt_no_pos_pct']:.1f} | {r['train_min']:.1f} |")
    table = "\n".join(lines) + "\n"
    (work_dir / "ablation.md").write_text(table)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--assigners", nargs="+", default=["atss", "iou", "grid"])
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    work_dir = Path(args.work_dir or ROOT / "work_dirs" / "ablation" / Path(args.config).stem)
    work_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, float]] = {}
    try:
        for name in args.assigners:
            print(f"== {name}", flush=True)
            rows[name] = run_one(args.config, name, args.cfg_options, work_dir, not args.no_progress)
            write_table(rows, work_dir)  # the table so far survives an interrupted ablation
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(write_table(rows, work_dir))
    print(f"table written to {work_dir}/ablation.md and ablation.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
