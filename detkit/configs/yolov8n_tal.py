"""YOLOv8-n on COCO 2017: ``yolov8s_tal.py`` at Ultralytics' n scale.

Depth 0.33, width 0.25, channels capped at 1024 before widening (``CSPDarknet(scale="n")``), 1
bottleneck per CSPPAN C2f block. 3,157,184 parameters with 80 classes: Ultralytics 8.4.190's
YOLOv8n (3,157,200) less its 16 fixed DFL projection weights; backbone 1,272,656. Head, loss, data
and schedule are ``yolov8s_tal.py``'s (Ultralytics' default hyperparameters); only the size changes.

    python tools/train.py configs/yolov8n_tal.py
    python tools/test.py configs/yolov8n_tal.py yolov8n_converted.pth   # Ultralytics weights, see README
"""

_base_ = ["yolov8s_tal.py"]

model = dict(backbone=dict(scale="n"), neck=dict(num_blocks=1))
