"""Write the synthetic shapes dataset (COCO format) to OUT_DIR, a missing or empty folder.

    python tools/make_shapes.py data/shapes --train 1000 --val 200 --size 320 --seed 0

Never writes over existing files: a folder that is not empty (a user's files, or a set made
before) is refused (exit status 2); a generation that was killed is recognised by its marker file
and done again. Point ``DETKIT_SHAPES`` at OUT_DIR to train the shapes configs on it: an existing
set is used as it is (a warning says when its settings differ from the config's).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from detkit.argtypes import nonnegative_int, positive_int
from detkit.cli import ArgumentParser, run_cli
from detkit.errors import UsageError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=nonnegative_int, default=1000, help="training images")
    parser.add_argument("--val", type=nonnegative_int, default=200, help="validation images")
    parser.add_argument("--size", type=positive_int, default=320, help="image side in pixels (>= 64)")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--workers", type=positive_int, default=None, help="processes (default: up to 4)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    from detkit.data.shapes import make_shapes_dataset
    from detkit.engine.output_paths import check_output_dir

    if args.size < 64:
        raise UsageError(f"--size {args.size}: shapes images need size >= 64 (pixels)")
    if args.train + args.val == 0:
        raise UsageError("--train 0 --val 0: nothing to generate")
    check_output_dir(args.out_dir, "OUT_DIR")
    start = time.perf_counter()
    paths = make_shapes_dataset(args.out_dir, args.train, args.val, args.size, args.seed, args.workers)
    for split, path in paths.items():
        print(f"{split}: {path}")
    print(f"{args.train + args.val} images in {time.perf_counter() - start:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
