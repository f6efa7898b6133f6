"""Report every problem in a dataset (file and reason, one per line) and a summary.

    python tools/check_dataset.py data/coco/annotations/instances_val2017.json --format coco
    python tools/check_dataset.py ../shared/data/coco128/images/train2017 --format yolo
    python tools/check_dataset.py data/VOCdevkit/VOC2007 --format voc --split test

Every image is decoded the way training reads it (EXIF orientation, 16-bit, alpha; see
docs/reliability.md). Prints one line per problem (where, then the reason), a summary line, and
the count per reason. Exit status: 0 clean, 1 problems found, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from detkit.data.base import DEFAULT_MAX_SIZE
from detkit.data.checks import FORMATS, check_dataset


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="COCO json, YOLO image folder, or VOC root")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--images", default=None, help="COCO image folder (default: root/<split> next to annotations/)")
    parser.add_argument("--names", default=None,
                        help="YOLO class names file (default: names.txt / data.yaml found upwards)")
    parser.add_argument("--split", default=None, help="VOC ImageSets/Main list (default: every xml)")
    parser.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE,
                        help="decode images at most this large, as training does (default: %(default)s)")
    parser.add_argument("--stored-orientation", action="store_true",
                        help="ignore EXIF orientation: labels refer to the stored pixels (exif_orientation=False)")
    args = parser.parse_args(argv)
    data_logger = logging.getLogger("detkit.data")
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)  # the report below says it all
    try:
        problems, ds = check_dataset(args.path, args.format, args.images, args.names, args.split,
                                     args.max_size, not args.stored_orientation)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        data_logger.setLevel(level)
    for path, reason in problems.records:
        print(f"{path}: {reason}")
    n_img = len(ds) if ds is not None else 0
    n_box = sum(len(r["boxes"]) for r in ds.records) if ds is not None else 0
    n_ign = sum(len(r["ignore_boxes"]) for r in ds.records) if ds is not None else 0
    print(f"{args.path}: {n_img} usable images, {n_box} boxes, {n_ign} ignore regions; {problems.summary()}")
    for line in problems.table():
        print(f"  {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
