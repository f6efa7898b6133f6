"""YOLO26-l on COCO 2017: ``yolo26n.py`` at Ultralytics' l scale.

Depth 1.00, width 1.00, channels capped at 512 before widening (``CSPDarknet(scale="l")``), 2 inner blocks per
C3k2 block (C3k inner blocks in every one: Ultralytics' rule at m, l and x), one in the top bottom-up block
with attention. 26,299,704 parameters with 80 classes: Ultralytics 8.4.190's YOLO26l (26,299,704), the same
(``reg_max=1``: no fixed DFL projection); backbone 12,833,600. Head, losses, data and schedule are
``yolo26n.py``'s; only the size changes.

    python tools/train.py configs/yolo26l.py
    python tools/test.py configs/yolo26l.py yolo26l_converted.pth   # Ultralytics weights, see README
"""

_base_ = ["yolo26n.py"]

model = dict(backbone=dict(scale="l"), neck=dict(num_blocks=2))
