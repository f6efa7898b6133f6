"""COCO 2017 under data/coco (or $DETKIT_COCO): 640 px, YOLOv4-style training pipeline.

Layout: data/coco/annotations/instances_{train,val}2017.json, data/coco/{train,val}2017/*.jpg.
"""

import os

from detkit.config import L
from detkit.data import COCO_CLASSES, CocoDataset, LetterBox, Mosaic, RandomAffine, RandomFlip, RandomHSV
from detkit.data.roots import dataset_root

_root = dataset_root("coco", "DETKIT_COCO")
_size = 640

data = dict(
    train=dict(
        dataset=L(CocoDataset)(
            ann_file=os.path.join(_root, "annotations/instances_train2017.json"),
            img_dir=os.path.join(_root, "train2017"),
            filter_empty=False,
            pipeline=[
                L(Mosaic)(size=_size, p=1.0),
                L(RandomAffine)(size=_size, degrees=0.0, translate=0.1, scale=0.5, shear=0.0),
                L(RandomHSV)(h=0.015, s=0.7, v=0.4),
                L(RandomFlip)(p=0.5),
            ],
        ),
        batch_size=16,
        num_workers=8,
    ),
    val=dict(
        dataset=L(CocoDataset)(
            ann_file=os.path.join(_root, "annotations/instances_val2017.json"),
            img_dir=os.path.join(_root, "val2017"),
            pipeline=[L(LetterBox)(size=_size)],
        ),
        batch_size=16,
        num_workers=4,
    ),
    img_size=_size,
    num_classes=80,
    class_names=list(COCO_CLASSES),
)
