"""YOLOv8-x on COCO 2017: ``yolov8s_tal.py`` at Ultralytics' x scale.

Depth 1.00, width 1.25, channels capped at 512 before widening (``CSPDarknet(scale="x")``), 3
bottlenecks per CSPPAN C2f block. 68,229,632 parameters with 80 classes: Ultralytics 8.4.190's
YOLOv8x (68,229,648) less its 16 fixed DFL projection weights; backbone 30,943,120. Head, loss, data
and schedule are ``yolov8s_tal.py``'s (Ultralytics' default hyperparameters); only the size changes.

    python tools/train.py configs/yolov8x_tal.py
    python tools/test.py configs/yolov8x_tal.py yolov8x_converted.pth   # Ultralytics weights, see README
"""

_base_ = ["yolov8s_tal.py"]

model = dict(backbone=dict(scale="x"), neck=dict(num_blocks=3))
