"""Small CPU config: YOLOv4 at width 0.25 / depth 0.33 on the synthetic shapes set, ATSS.

The model of ``make demo``: CSPDarknet-PAN(SPP)-YOLO head, anchors fitted to the shapes set by
``tools/kmeans_anchors.py data/shapes/annotations/instances_train.json --format coco --size 320``
(mean best IoU 0.73 vs 0.67 for the COCO anchors halved), 320 px inputs.

    python tools/train.py configs/shapes_atss.py
    python tools/train.py configs/shapes_atss.py --cfg-options 'model.head.assigner=MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)'
"""

from detkit.anchors import YOLOAnchorGenerator
from detkit.assigners import ATSSAssigner
from detkit.config import L
from detkit.data import SHAPE_CLASSES

_base_ = [
    "common/models/yolov4_tiny_cpu.py",
    "common/data/shapes.py",
    "common/schedules/shapes_short.py",
    "common/runtime.py",
]

SHAPES_ANCHORS = [
    [(15, 15), (19, 25), (29, 21)],
    [(31, 41), (49, 35), (53, 73)],
    [(81, 57), (101, 107), (170, 168)],
]

model = dict(
    head=dict(
        num_classes=len(SHAPE_CLASSES),
        prior_generator=L(YOLOAnchorGenerator)(base_sizes=SHAPES_ANCHORS, strides=[8, 16, 32]),
        assigner=L(ATSSAssigner)(topk=9),
    )
)
