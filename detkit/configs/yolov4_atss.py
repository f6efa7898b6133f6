"""YOLOv4 on COCO 2017 with ATSS assignment (topk=9).

CSPDarknet53-PAN-SPP, YOLO head with the 9 COCO anchors, CIoU box loss, BCE cls/obj, mosaic +
affine + HSV + flip at 640, SGD nesterov with warm-up and cosine decay over 300 epochs, EMA.
Identical to ``yolov4_iou.py`` except for the ``model.head.loss.assigner`` line.

    python tools/train.py configs/yolov4_atss.py
"""

from detkit.assigners import ATSSAssigner
from detkit.config import L

_base_ = [
    "common/models/yolov4.py",
    "common/data/coco.py",
    "common/schedules/cosine_300e.py",
    "common/runtime.py",
]

model = dict(head=dict(loss=dict(assigner=L(ATSSAssigner)(topk=9))))
