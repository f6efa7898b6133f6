"""coco128 (YOLO txt layout) from ../shared/data/coco128 beside the repo, or $DETKIT_COCO128.

Training reads the YOLO labels; validation reads the same images through the COCO json that
coco128 also ships, so the evaluator has COCO ground truth (ignore regions included).
"""

import os

from detkit.config import L
from detkit.data import COCO_CLASSES, CocoDataset, LetterBox, Mosaic, RandomAffine, RandomFlip, RandomHSV, YoloDataset
from detkit.data.roots import coco128_root

_root = coco128_root()
_size = 640

data = dict(
    train=dict(
        dataset=L(YoloDataset)(
            img_dir=os.path.join(_root, "images/train2017"),
            class_names=os.path.join(_root, "names.txt"),
            pipeline=[
                L(Mosaic)(size=_size, p=1.0),
                L(RandomAffine)(size=_size, degrees=0.0, translate=0.1, scale=0.5, shear=0.0),
                L(RandomHSV)(h=0.015, s=0.7, v=0.4),
                L(RandomFlip)(p=0.5),
            ],
        ),
        batch_size=16,
        num_workers=2,
    ),
    val=dict(
        dataset=L(CocoDataset)(
            ann_file=os.path.join(_root, "annotations/instances_train2017.json"),
            img_dir=os.path.join(_root, "images/train2017"),
            pipeline=[L(LetterBox)(size=_size)],
        ),
        batch_size=16,
        num_workers=2,
    ),
    img_size=_size,
    num_classes=80,
    class_names=list(COCO_CLASSES),
)
