"""Small CPU config on coco128 (YOLO labels for training, the COCO json for evaluation), ATSS.

YOLOv4 at width 0.25 / depth 0.33 with the 9 COCO anchors at 640; a smoke-scale schedule for
trying the full pipeline on real images (coco128 is too small to learn COCO from).

    python tools/train.py configs/coco128_atss.py
"""

from detkit.assigners import ATSSAssigner
from detkit.config import L

_base_ = [
    "common/models/yolov4_tiny_cpu.py",
    "common/data/coco128.py",
    "common/schedules/shapes_short.py",
    "common/runtime.py",
]

model = dict(head=dict(loss=dict(assigner=L(ATSSAssigner)(topk=9))))
data = dict(train=dict(batch_size=8), val=dict(batch_size=8))
train = dict(epochs=10, eval_interval=5)
schedule = dict(no_mosaic_last_epochs=2)
