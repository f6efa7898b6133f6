"""YOLO26-x on COCO 2017: ``yolo26n.py`` at Ultralytics' x scale.

Depth 1.00, width 1.50, channels capped at 512 before widening (``CSPDarknet(scale="x")``), 2 inner blocks per
C3k2 block (C3k inner blocks in every one: Ultralytics' rule at m, l and x), one in the top bottom-up block
with attention. 58,993,368 parameters with 80 classes: Ultralytics 8.4.190's YOLO26x (58,993,368), the same
(``reg_max=1``: no fixed DFL projection); backbone 28,847,328. Head, losses, data and schedule are
``yolo26n.py``'s; only the size changes.

    python tools/train.py configs/yolo26x.py
    python tools/test.py configs/yolo26x.py yolo26x_converted.pth   # Ultralytics weights, see README
"""

_base_ = ["yolo26n.py"]

model = dict(backbone=dict(scale="x"), neck=dict(num_blocks=2))
