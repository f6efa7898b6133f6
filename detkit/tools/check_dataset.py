"""Report every problem in a dataset (file and reason, one per line) and a summary.

    python tools/check_dataset.py ../shared/data/coco128 --format yolo                # root: every split
    python tools/check_dataset.py datasets/coco128/coco128.yaml                         # Ultralytics data.yaml
    python tools/check_dataset.py ../shared/data/coco128/images/train2017 --format yolo # one images folder
    python tools/check_dataset.py data/coco/annotations/instances_val2017.json [--images DIR]
    python tools/check_dataset.py data/VOCdevkit/VOC2007 --format voc --split test

PATH may be a YOLO dataset root (``images/<split>/`` and ``labels/<split>/`` side by side: every
split is checked), a YOLO ``data.yaml`` or the folder holding it (its ``path``, ``train`` / ``val`` /
``test`` folders and ``names``, read as ``--data`` reads them), an images folder, a COCO json (images in
``--images DIR``, else ``root/<split>/`` or ``root/images/<split>/`` beside ``root/annotations/``), a COCO
root with ``annotations/``, or a VOC root. ``--format`` is told from the path when omitted (json: coco,
yaml: yolo, a folder with ``Annotations/``: voc, another folder: yolo).

Every image is decoded the way training reads it (EXIF orientation, 16-bit, alpha; see
docs/reliability.md). Prints one line per problem (where, then the reason), a line per split, a
summary line, and the count per reason. A YOLO split without its labels folder and a split whose
every image is background (no usable box at all) are problems. Exit status: 0 clean, 1 problems
found, 2 bad arguments (a path that does not exist, no class names, images that cannot be found).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from detkit.argtypes import positive_int
from detkit.cli import ArgumentParser, run_cli

# check_dataset's arguments whose flag does not follow argparse's --dest-name (errors' remedies name them)
FLAGS = {"fmt": "--format"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from detkit.data.base import DEFAULT_MAX_SIZE
    from detkit.data.checks import FORMATS

    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="YOLO root / data.yaml / images folder, COCO json or root, or VOC root")
    parser.add_argument("--format", default=None, choices=FORMATS, help="default: told from the path")
    parser.add_argument("--images", default=None,
                        help="COCO image folder (default: root/<split> or root/images/<split> beside annotations/)")
    parser.add_argument("--labels", default=None,
                        help="YOLO labels folder of one images folder (default: its path with images -> labels)")
    parser.add_argument("--names", default=None,
                        help="class names file (YOLO default: the data.yaml's names, or names.txt / data.yaml "
                             "found upwards; VOC default: as --data reads the root)")
    parser.add_argument("--split", default=None, help="VOC ImageSets/Main list (default: every xml)")
    parser.add_argument("--max-size", type=positive_int, default=DEFAULT_MAX_SIZE,
                        help="decode images at most this large, as training does (default: %(default)s)")
    parser.add_argument("--stored-orientation", action="store_true",
                        help="ignore EXIF orientation: labels refer to the stored pixels (exif_orientation=False)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> bool:
    """Print the report; True when problems were found."""
    from detkit.data.checks import check_dataset

    data_logger = logging.getLogger("detkit.data")
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)  # the report below says it all
    try:
        problems, found = check_dataset(args.path, args.format, args.images, args.names, args.split,
                                        args.max_size, not args.stored_orientation, labels=args.labels)
    finally:
        data_logger.setLevel(level)
    for path, reason in problems.records:
        print(f"{path}: {reason}")
    totals = [0, 0, 0]
    for name, ds in found:
        counts = (len(ds), sum(len(r["boxes"]) for r in ds.records), sum(len(r["ignore_boxes"]) for r in ds.records))
        totals = [t + c for t, c in zip(totals, counts)]
        if len(found) > 1:
            print(f"  {name}: {counts[0]} usable images, {counts[1]} boxes, {counts[2]} ignore regions "
                  f"({ds.problems.total} problem(s))")
    print(f"{args.path}: {totals[0]} usable images, {totals[1]} boxes, {totals[2]} ignore regions; "
          f"{problems.summary()}")
    for line in problems.table():
        print(f"  {line}")
    return bool(problems)


def main(argv: Sequence[str] | None = None) -> int:
    found_problems = False

    def job() -> None:
        nonlocal found_problems
        found_problems = run(parse_args(argv))

    code = run_cli(job, flags=FLAGS)  # a remedy naming fmt / images / names / labels: --format, --images DIR, ...
    return 1 if code == 0 and found_problems else code


if __name__ == "__main__":
    sys.exit(main())
