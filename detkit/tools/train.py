"""Train a detector from a config.

    python tools/train.py configs/yolov4_atss.py [--work-dir DIR] [--resume [PATH] | --overwrite] [--load-from PATH]
        [--cfg-options train.epochs=12 data.train.batch_size=8 ...] [--seed N] [--deterministic] [--device cuda]

    torchrun --nproc_per_node 4 tools/train.py configs/yolov4_atss.py     # DDP, one process per GPU

    # your own data: a data.yaml (Roboflow / Ultralytics), YOLO root, COCO json or VOC root; classes and
    # splits from the data, the config's pipelines at one --img-size (docs/custom_data.md)
    python tools/train.py configs/yolov8n_tal.py --data mydata/data.yaml [--img-size 640] [--img-dir DIR]

The work dir (default ``work_dirs/<config name>``) receives the config dump, ``train.log``,
``metrics.csv`` / ``metrics.jsonl``, TensorBoard events, PNG curves and checkpoints
(``epoch_<E>.pth``, ``iter_<I>.pth``, ``best.pth``). ``--resume`` without a path continues from
the newest checkpoint there that loads; it refuses a run whose batch size, accumulation, process
count, image size, classes or dataset size changed (the sample order would change), unless
``--resume-anyway`` (continues from the next epoch boundary). At the end of training ``best.pth``
and ``last.pth`` hold the weights only (``train.checkpoint.final_fp16``: in fp16).

One run per work dir: a run holds ``run.lock`` there while it trains (a second run is refused,
naming the holder; a lock left by a killed run is taken over). A work dir holding an earlier run
(checkpoints or metrics) is refused unless ``--resume`` continues it or ``--overwrite`` deletes its
checkpoints, metrics, log and plots first; the default work dir is no exception (it is never
renumbered).

Exit status: 0 done; 2 a user error (config, data, checkpoint, work dir in use or holding an
earlier run, an output path that cannot be written), message on stderr; 1 training
diverged (``train.max_nonfinite_steps`` non-finite steps in a row; the last good checkpoint is
kept); 130 / 143 stopped by SIGINT / SIGTERM (128 + the signal, as a shell reports a process the
signal ended): the first signal finishes the optimizer step and writes ``iter_<N>.pth`` for
``--resume``, a second one aborts at once without writing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from detkit.argtypes import nonnegative_int
from detkit.cli import ArgumentParser, cli_message, run_cli
from detkit.data.adopt import add_data_arguments, load_data_config


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="config file, e.g. configs/yolov4_atss.py")
    p.add_argument("--work-dir", default=None, help="output folder (default work_dirs/<config name>)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from PATH, or from the newest checkpoint in the work dir when no PATH")
    p.add_argument("--resume-anyway", action="store_true",
                   help="resume (as --resume) although the batch size, accumulation, process count, image size, "
                        "classes or dataset size changed: continues from the next epoch boundary")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in a work dir holding an earlier run, deleting its checkpoints and metrics")
    p.add_argument("--load-from", default=None,
                   help="start from these weights (detkit checkpoint, torchvision ResNet, Darknet .weights)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    add_data_arguments(p)
    p.add_argument("--seed", type=nonnegative_int, default=None, help="overrides train.seed")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default runtime.device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def train(args: argparse.Namespace) -> None:
    from detkit.engine.output_paths import check_not_input, config_input_paths
    from detkit.engine.trainer import Trainer

    # under torchrun only the first process describes --data (the process group is not up yet)
    cfg = load_data_config(args.config, args.cfg_options, args,
                           quiet=os.environ.get("RANK", "0") != "0")
    if args.work_dir:  # never a data set's folder or inside one (a config in the work dir is kept: config.dump.py)
        inputs = [args.load_from, *config_input_paths(args.data), *config_input_paths(cfg.get("data"))]
        check_not_input(args.work_dir, inputs, "--work-dir")
    trainer = Trainer(cfg, work_dir=args.work_dir, device=args.device, seed=args.seed,
                      deterministic=args.deterministic or None, load_from=args.load_from,
                      resume=args.resume or ("auto" if args.resume_anyway else None), resume_anyway=args.resume_anyway,
                      progress=False if args.no_progress else None, overwrite=args.overwrite)
    best = trainer.train()["best"]
    if trainer.rank == 0:
        if best["epoch"] >= 0:
            print(f"best {best['metric']} {best['value']:.4f} at epoch {best['epoch']}; outputs in {trainer.work_dir}")
        else:
            print(f"done; outputs in {trainer.work_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    from detkit.engine.distributed import cleanup_distributed, get_rank
    from detkit.engine.trainer import TrainingAborted, TrainingDiverged, TrainingInterrupted

    aborted = False

    def diverged(e: TrainingDiverged) -> int:
        if get_rank() == 0:
            print(f"error: {e}", file=sys.stderr)
        return 1

    def interrupted(e: TrainingInterrupted) -> int:
        if get_rank() == 0:
            print(f"interrupted: {cli_message(e)}", file=sys.stderr)  # continue with --resume
        return e.exit_code

    def abort(e: TrainingAborted) -> int:
        nonlocal aborted
        aborted = True  # ranks may be anywhere: no barrier on the way out
        print(f"{e}: no checkpoint written for the current step; --resume continues from the newest one",
              file=sys.stderr)
        return e.exit_code

    try:
        return run_cli(lambda: train(parse_args(argv)),
                       handlers={TrainingDiverged: diverged, TrainingInterrupted: interrupted, TrainingAborted: abort})
    finally:
        if not aborted:
            cleanup_distributed()


if __name__ == "__main__":
    from detkit.engine.distributed import exit_process

    exit_process(main())
