"""YOLO11-m on COCO 2017: ``yolo11n_tal.py`` at Ultralytics' m scale.

Depth 0.50, width 1.00, channels capped at 512 before widening (``CSPDarknet(scale="m")``), 1 inner block per
C3k2 block. C3k inner blocks in every C3k2 block (``c3k``: Ultralytics' rule at m, l and x). 20,114,672
parameters with 80 classes: Ultralytics 8.4.190's YOLO11m (20,114,688) less its 16 fixed DFL projection
weights; backbone 10,352,192. Head, loss, data and schedule are ``yolo11n_tal.py``'s (YOLOv8's recipe); only
the size changes.

    python tools/train.py configs/yolo11m_tal.py
    python tools/test.py configs/yolo11m_tal.py yolo11m_converted.pth   # Ultralytics weights, see README
"""

_base_ = ["yolo11n_tal.py"]

model = dict(backbone=dict(scale="m"), neck=dict(num_blocks=1, c3k=True))
