"""YOLOv8-l on COCO 2017: ``yolov8s_tal.py`` at Ultralytics' l scale.

Depth 1.00, width 1.00, channels capped at 512 before widening (``CSPDarknet(scale="l")``), 3
bottlenecks per CSPPAN C2f block. 43,691,504 parameters with 80 classes: Ultralytics 8.4.190's
YOLOv8l (43,691,520) less its 16 fixed DFL projection weights; backbone 19,808,576. Head, loss, data
and schedule are ``yolov8s_tal.py``'s (Ultralytics' default hyperparameters); only the size changes.

    python tools/train.py configs/yolov8l_tal.py
    python tools/test.py configs/yolov8l_tal.py yolov8l_converted.pth   # Ultralytics weights, see README
"""

_base_ = ["yolov8s_tal.py"]

model = dict(backbone=dict(scale="l"), neck=dict(num_blocks=3))
