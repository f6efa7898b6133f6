"""YOLO11-l on COCO 2017: ``yolo11n_tal.py`` at Ultralytics' l scale.

Depth 1.00, width 1.00, channels capped at 512 before widening (``CSPDarknet(scale="l")``), 2 inner blocks per
C3k2 block. C3k inner blocks in every C3k2 block (``c3k``: Ultralytics' rule at m, l and x). 25,372,144
parameters with 80 classes: Ultralytics 8.4.190's YOLO11l (25,372,160) less its 16 fixed DFL projection
weights; backbone 12,833,600. Head, loss, data and schedule are ``yolo11n_tal.py``'s (YOLOv8's recipe); only
the size changes.

    python tools/train.py configs/yolo11l_tal.py
    python tools/test.py configs/yolo11l_tal.py yolo11l_converted.pth   # Ultralytics weights, see README
"""

_base_ = ["yolo11n_tal.py"]

model = dict(backbone=dict(scale="l"), neck=dict(num_blocks=2, c3k=True))
