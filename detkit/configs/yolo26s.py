"""YOLO26-s on COCO 2017: ``yolo26n.py`` at Ultralytics' s scale.

Depth 0.50, width 0.50, channels capped at 1024 before widening (``CSPDarknet(scale="s")``), 1 inner block per
C3k2 block, one in the top bottom-up block with attention. 10,009,784 parameters with 80 classes: Ultralytics
8.4.190's YOLO26s (10,009,784), the same (``reg_max=1``: no fixed DFL projection); backbone 5,441,984. Head,
losses, data and schedule are ``yolo26n.py``'s; only the size changes.

    python tools/train.py configs/yolo26s.py
    python tools/test.py configs/yolo26s.py yolo26s_converted.pth   # Ultralytics weights, see README
"""

_base_ = ["yolo26n.py"]

model = dict(backbone=dict(scale="s"), neck=dict(num_blocks=1))
