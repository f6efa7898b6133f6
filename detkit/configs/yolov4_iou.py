"""YOLOv4 on COCO 2017 with max-IoU assignment (pos >= 0.5, neg < 0.4, low-quality matches).

Identical to ``yolov4_atss.py`` except for the ``model.head.loss.assigner`` line.

    python tools/train.py configs/yolov4_iou.py
"""

from detkit.assigners import MaxIoUAssigner
from detkit.config import L

_base_ = [
    "common/models/yolov4.py",
    "common/data/coco.py",
    "common/schedules/cosine_300e.py",
    "common/runtime.py",
]

model = dict(head=dict(loss=dict(assigner=L(MaxIoUAssigner)(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0,
                                                            match_low_quality=True))))
