"""Print a config after merging its _base_ chain and command-line overrides.

    python tools/print_config.py configs/yolov4_atss.py \
        --cfg-options 'model.head.loss.assigner=MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)'

The output is Python that `load_config` reads back to the same config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from detkit.config import ConfigError, format_config, load_config  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides, e.g. model.head.num_classes=20")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.cfg_options)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_config(cfg), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
