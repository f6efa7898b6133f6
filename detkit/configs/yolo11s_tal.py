"""YOLO11-s on COCO 2017: ``yolo11n_tal.py`` at Ultralytics' s scale.

Depth 0.50, width 0.50, channels capped at 1024 before widening (``CSPDarknet(scale="s")``), 1 inner block per
C3k2 block. 9,458,736 parameters with 80 classes: Ultralytics 8.4.190's YOLO11s (9,458,752) less its 16 fixed
DFL projection weights; backbone 5,441,984. Head, loss, data and schedule are ``yolo11n_tal.py``'s (YOLOv8's
recipe); only the size changes.

    python tools/train.py configs/yolo11s_tal.py
    python tools/test.py configs/yolo11s_tal.py yolo11s_converted.pth   # Ultralytics weights, see README
"""

_base_ = ["yolo11n_tal.py"]

model = dict(backbone=dict(scale="s"), neck=dict(num_blocks=1, c3k=False))
