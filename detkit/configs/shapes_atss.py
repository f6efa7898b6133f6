"""Small CPU config: a YOLOv5-layout CSPDarknet (depth 0.33, width 0.125) - PAN(SPP) - YOLO head on
the synthetic shapes set, ATSS.

The demo's network and schedule (``make demo`` trains it with YOLOv8's head for 15 epochs:
``shapes_yolov8_tal.py``; this anchor head was the demo until 2026-12-02): CSPDarknet with
YOLOv5's 6x6 stride-2 stem (``arch="yolov5"``: no full-resolution layer, 3.4x faster per step than
YOLOv4's layout at this width), PAN with SPP, YOLO head with anchors fitted to the shapes set by
``tools/kmeans_anchors.py data/shapes/annotations/instances_train.json --format coco --size 320``
(mean best IoU 0.73 vs 0.67 for the COCO anchors), 320 px inputs, 17 epochs of 1000 images.
The loss weights are larger than YOLOv5's defaults (cls 0.5/80, box 0.05), which are made for
300-epoch schedules: with those, a few epochs barely move the classifier (measured: mAP 0.07).

    python tools/train.py configs/shapes_atss.py
    python tools/train.py configs/shapes_atss.py \\
        --cfg-options 'model.head.loss.assigner=MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)'
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
    backbone=dict(arch="yolov5", widen_factor=0.125),
    head=dict(
        num_classes=len(SHAPE_CLASSES),
        prior_generator=L(YOLOAnchorGenerator)(base_sizes=SHAPES_ANCHORS, strides=[8, 16, 32]),
        loss=dict(assigner=L(ATSSAssigner)(topk=9), loss_weights=dict(cls=0.1, obj=1.0, box=0.5)),
    )
)
train = dict(
    epochs=17,
    eval_interval=17,
    optimizer=dict(lr=0.02),  # merged into the base's L(torch.optim.SGD)(...) call: only lr changes
)
schedule = dict(no_mosaic_last_epochs=3)
