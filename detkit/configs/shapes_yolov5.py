"""The demo's network and schedule (``shapes_atss.py``) with YOLOv5's label assignment and box coding:
every anchor whose width and height are within 4x of the GT's, in the GT's cell and its two nearest
neighbouring cells (``YOLOv5Assigner``, YOLOv5's ``build_targets``), and YOLOv5's box parameters
(centre ``2 * sigmoid - 0.5`` in cells, size ``(2 * sigmoid)**2`` times the anchor). Only the assigner
and the coder differ from ``shapes_atss.py``.

    python tools/train.py configs/shapes_yolov5.py
    python tools/compare_assigners.py configs/shapes_yolov5.py --assigners yolov5 atss grid --images 200
"""

from detkit.anchors import YOLOAnchorGenerator
from detkit.assigners import YOLOv5Assigner
from detkit.coders import YOLOCoder
from detkit.config import L
from detkit.data import SHAPE_CLASSES

_base_ = ["shapes_atss.py"]

SHAPES_ANCHORS = [
    [(15, 15), (19, 25), (29, 21)],
    [(31, 41), (49, 35), (53, 73)],
    [(81, 57), (101, 107), (170, 168)],
]

model = dict(
    head=dict(
        num_classes=len(SHAPE_CLASSES),
        prior_generator=L(YOLOAnchorGenerator)(base_sizes=SHAPES_ANCHORS, strides=[8, 16, 32]),
        coder=L(YOLOCoder)(scale_x_y=2.0, size_mode="sigmoid_square"),
        loss=dict(assigner=L(YOLOv5Assigner)(anchor_t=4.0, offset=0.5)),
    )
)
