"""YOLOv8-m on COCO 2017: ``yolov8s_tal.py`` at Ultralytics' m scale.

Depth 0.67, width 0.75, channels capped at 768 before widening (``CSPDarknet(scale="m")``), 2
bottlenecks per CSPPAN C2f block. 25,902,624 parameters with 80 classes: Ultralytics 8.4.190's
YOLOv8m (25,902,640) less its 16 fixed DFL projection weights; backbone 11,855,856. Head, loss, data
and schedule are ``yolov8s_tal.py``'s (Ultralytics' default hyperparameters); only the size changes.

    python tools/train.py configs/yolov8m_tal.py
    python tools/test.py configs/yolov8m_tal.py yolov8m_converted.pth   # Ultralytics weights, see README
"""

_base_ = ["yolov8s_tal.py"]

model = dict(backbone=dict(scale="m"), neck=dict(num_blocks=2))
