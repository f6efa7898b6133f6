"""Write dataset samples with their GT boxes and class names drawn, after the training pipeline
(so mosaic / affine / flip output can be looked at).

    python tools/browse_dataset.py configs/common/data/coco128.py --num 8 --out work_dirs/browse
    python tools/browse_dataset.py CONFIG --split val --cfg-options data.train.dataset.pipeline.0.p=0.0

Ignore regions (crowd / difficult) are drawn in grey. The dataset's problems (skipped images,
label rows, boxes; see docs/reliability.md) are summarised at the end.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence

import cv2
import numpy as np

from detkit.argtypes import nonnegative_int, positive_int
from detkit.cli import ArgumentParser, run_cli
from detkit.config import ConfigError, instantiate, load_config
from detkit.engine.output_paths import check_not_input, check_output_dir, config_input_paths
from detkit.viz import color_for

IGNORE_COLOR = (160, 160, 160)


def draw_sample(sample: dict, class_names: Sequence[str]) -> np.ndarray:
    """``(H, W, 3) uint8`` BGR image of a sample with its boxes, class names and ignore regions."""
    img = cv2.cvtColor(np.ascontiguousarray(sample["img"]), cv2.COLOR_RGB2BGR)
    for box in np.asarray(sample["ignore_boxes"]).reshape(-1, 4):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(img, (x1, y1), (x2, y2), IGNORE_COLOR, 1)
    for box, label in zip(np.asarray(sample["boxes"]).reshape(-1, 4), np.asarray(sample["labels"]).reshape(-1)):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        color = color_for(int(label))
        cv2.rectangle(img, (x1, y1), (x2, y2), color, 2)
        name = class_names[label] if 0 <= label < len(class_names) else str(int(label))
        (tw, th), base = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        y0 = max(y1, th + base + 2)
        cv2.rectangle(img, (x1, y0 - th - base - 2), (x1 + tw + 2, y0), color, -1)
        cv2.putText(img, name, (x1 + 1, y0 - base - 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--split", default="train", help="data split of the config (train / val)")
    parser.add_argument("--num", type=positive_int, default=8, help="how many samples")
    parser.add_argument("--out", default="work_dirs/browse", help="output folder")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="picks the samples and seeds the augmentation")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    check_not_input(args.out, [args.config], "--out")
    out = check_output_dir(args.out, "--out")
    cfg = load_config(args.config, args.cfg_options)
    if args.split not in (cfg.get("data") or {}):
        raise ConfigError(f"{args.config}: no data.{args.split}; splits: {sorted(cfg.get('data') or {})}")
    check_not_input(out, config_input_paths(cfg.data[args.split]), "--out")  # not inside the data set
    dataset = instantiate(cfg.data[args.split].dataset, f"data.{args.split}.dataset")
    names = list(cfg.data.get("class_names") or getattr(dataset, "class_names", []))
    random.seed(args.seed)
    np.random.seed(args.seed)
    out.mkdir(parents=True, exist_ok=True)
    indices = random.sample(range(len(dataset)), min(args.num, len(dataset)))
    for k, index in enumerate(indices):
        sample = dataset[index]
        path = out / f"{k:03d}_{sample['image_id']}.jpg"
        cv2.imwrite(str(path), draw_sample(sample, names))
        n_box, n_ign = len(sample["boxes"]), len(sample["ignore_boxes"])
        print(f"{path}: {n_box} boxes, {n_ign} ignore, size {sample['img'].shape[:2]}")
    problems = getattr(dataset, "problems", None)
    if problems:  # skipped while indexing, or found reading these samples
        print(problems.summary())


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0, or 2 for a usage, config or data mistake (``error: ...`` on stderr)."""
    return run_cli(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
