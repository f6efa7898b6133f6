"""YOLOv3's grid rule on the YOLOv4 network, COCO 2017.

Each GT is positive on one anchor only: the best-shaped anchor (over all levels) in the cell holding
its centre; non-positive anchors whose IoU with a GT exceeds 0.5 are ignored (YOLOv3's
``ignore_thresh``). No extra matches (``extra_match_thr=None``; YOLOv4's rule uses 0.213), and no
grid sensitivity (``scale_x_y=1.0``), as in YOLOv3.

    python tools/train.py configs/yolov3_grid.py
"""

from detkit.assigners import GridAssigner
from detkit.coders import YOLOCoder
from detkit.config import L

_base_ = [
    "common/models/yolov4.py",
    "common/data/coco.py",
    "common/schedules/cosine_300e.py",
    "common/runtime.py",
]

model = dict(head=dict(
    loss=dict(assigner=L(GridAssigner)(extra_match_thr=None, ignore_iou_thr=0.5)),
    coder=L(YOLOCoder)(scale_x_y=1.0),
))
