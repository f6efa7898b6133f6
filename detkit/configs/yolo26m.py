"""YOLO26-m on COCO 2017: ``yolo26n.py`` at Ultralytics' m scale.

Depth 0.50, width 1.00, channels capped at 512 before widening (``CSPDarknet(scale="m")``), 1 inner block per
C3k2 block (C3k inner blocks in every one: Ultralytics' rule at m, l and x), one in the top bottom-up block
with attention. 21,896,248 parameters with 80 classes: Ultralytics 8.4.190's YOLO26m (21,896,248), the same
(``reg_max=1``: no fixed DFL projection); backbone 10,352,192. Head, losses, data and schedule are
``yolo26n.py``'s; only the size changes.

    python tools/train.py configs/yolo26m.py
    python tools/test.py configs/yolo26m.py yolo26m_converted.pth   # Ultralytics weights, see README
"""

_base_ = ["yolo26n.py"]

model = dict(backbone=dict(scale="m"), neck=dict(num_blocks=1))
