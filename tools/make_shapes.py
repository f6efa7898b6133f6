"""Write the synthetic shapes dataset (COCO format) to OUT_DIR.

    python tools/make_shapes.py data/shapes --train 1000 --val 200 --size 320 --seed 0
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from detkit.data.shapes import make_shapes_dataset


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=1000, help="training images")
    parser.add_argument("--val", type=int, default=200, help="validation images")
    parser.add_argument("--size", type=int, default=320, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 4)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        paths = make_shapes_dataset(args.out_dir, args.train, args.val, args.size, args.seed, args.workers)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split, path in paths.items():
        print(f"{split}: {path}")
    print(f"{args.train + args.val} images in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
