"""Print a config after merging its _base_ chain and command-line overrides.

    python tools/print_config.py configs/yolov4_atss.py \
        --cfg-options 'model.head.loss.assigner=MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)'

The output is Python that `load_config` reads back to the same config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from detkit.cli import ArgumentParser, run_cli
from detkit.config import format_config, load_config


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides, e.g. model.head.num_classes=20")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0, or 2 for a usage or config mistake (``error: ...`` on stderr)."""

    def job() -> None:
        args = parse_args(argv)
        print(format_config(load_config(args.config, args.cfg_options)), end="")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
