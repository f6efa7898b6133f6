"""End-to-end demo on CPU: shapes set -> train a small CSPDarknet-PAN with YOLOv8's head -> COCO mAP.

    make demo                      # or: python tools/demo.py [--epochs N] [--work-dir DIR]

1. generates the synthetic shapes set under data/shapes if it is missing (1000 train / 200 val);
2. trains ``configs/shapes_yolov8_tal.py`` on the CPU: the demo network (YOLOv5-layout CSPDarknet-PAN,
   depth 0.33, width 0.125, 320 px) with YOLOv8's anchor-free decoupled head (DFL boxes, task-aligned
   assignment as Ultralytics runs it), 15 epochs -- the wall time ``configs/shapes_atss.py``'s anchor
   head takes for 17, measured to reach 0.07 AP more (README, "Heads on the shapes set");
3. evaluates the EMA weights on the val split with pycocotools and prints the COCO summary and the
   per-class table;
4. draws what the trained model's task-aligned rule, ATSS and FCOS assign on a few val images
   (``tools/compare_assigners.py``) and lists where the plots and pictures are.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "configs" / "shapes_yolov8_tal.py"
EPOCHS = 15  # the anchor head's 17-epoch wall time (the config's schedule, cosine decay over 15 epochs)
# The model is the config's; the demo sets its budget (EPOCHS, or --epochs) and writes fewer side files.
DEMO_OPTIONS = [
    "train.log_interval=20",
    "runtime.plot_interval=0",
    "runtime.loggers=[]",
]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default=str(ROOT / "work_dirs" / "demo"),
                        help="output folder; an earlier demo's outputs there are replaced")
    parser.add_argument("--epochs", type=int, default=None, help="override the demo's epoch count")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    import torch

    from detkit.config import load_config
    from detkit.data.shapes import ensure_shapes_dataset
    from detkit.engine.output_paths import check_output_dir
    from detkit.engine.trainer import Trainer

    start = time.perf_counter()
    check_output_dir(args.work_dir, "--work-dir")
    epochs = EPOCHS if args.epochs is None else args.epochs
    options = [f"train.epochs={epochs}", f"train.eval_interval={epochs}", *DEMO_OPTIONS]
    cfg = load_config(CONFIG, options)
    root = cfg.data.train.dataset.root
    print(f"[1/4] shapes set under {root} (generated when missing)", flush=True)
    ensure_shapes_dataset(root)
    print(f"[2/4] training {CONFIG.relative_to(ROOT)} for {cfg.train.epochs} epochs on "
          f"{torch.get_num_threads()} CPU threads -> {args.work_dir}", flush=True)
    trainer = Trainer(cfg, work_dir=args.work_dir, device="cpu", progress=False if args.no_progress else None,
                      overwrite=True)  # the demo's folder: a second `make demo` replaces the first one's run
    metrics = trainer.train()["last_metrics"]  # the last epoch ends with an evaluation
    train_s = time.perf_counter() - start
    print("[3/4] COCO evaluation of the EMA weights on the val split (pycocotools)", flush=True)
    print(trainer.evaluator.summary())
    print()
    print(trainer.evaluator.per_class_table())

    print("[4/4] assignment pictures: the trained model's task-aligned rule vs ATSS vs FCOS on 4 val images",
          flush=True)
    from detkit.tools import compare_assigners as compare

    pictures = Path(args.work_dir) / "assigners"
    status = compare.main([str(CONFIG), "--assigners", "config", "atss", "fcos", "--checkpoint",
                           str(Path(args.work_dir) / "best.pth"), "--images", "32", "--samples", "4",
                           "--out", str(pictures)])
    if status:
        return status

    total = time.perf_counter() - start
    print(f"\nmAP@[.5:.95] = {metrics.get('AP', 0.0):.3f}   mAP@.5 = {metrics.get('AP50', 0.0):.3f}   "
          f"(training {train_s / 60:.1f} min, total {total / 60:.1f} min)")
    print(f"curves (losses, AP, assignment statistics): {args.work_dir}/*.png, metrics in {args.work_dir}/metrics.csv")
    print(f"assignment pictures and tables: {pictures}/")
    print(f"checkpoints: {args.work_dir}/  (python tools/test.py {CONFIG.relative_to(ROOT)} {args.work_dir}/best.pth)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0; 2 a usage or config mistake; 1 training diverged; 128 + signal when stopped."""
    from detkit.cli import run_cli
    from detkit.engine.guards import TrainingDiverged, TrainingInterrupted

    def interrupted(e: TrainingInterrupted) -> int:
        print(f"interrupted: {e}", file=sys.stderr)
        return e.exit_code

    status = 0

    def job() -> None:
        nonlocal status
        status = run(parse_args(argv))

    return run_cli(job, failures=(TrainingDiverged,), handlers={TrainingInterrupted: interrupted}) or status


if __name__ == "__main__":
    sys.exit(main())
