"""YOLO11-n on COCO 2017 with task-aligned assignment, trained as ``yolov8s_tal.py`` (YOLO11 keeps YOLOv8's loss).

CSPDarknet (C3k2 stages, SPPF, C2PSA attention) - CSPPAN (C3k2) - decoupled DFL head with YOLO11's depthwise
class branch (``common/models/yolo11.py``); TAL as Ultralytics runs it (``tal-ultralytics``: top 10, alpha 0.5,
beta 6) with BCE on the alignment target, CIoU + DFL; YOLOv8's data pipeline and schedule (mosaic + affine + HSV
+ flip at 640, SGD with warm-up and linear decay over 500 epochs, EMA).

2,624,064 parameters with 80 classes: Ultralytics 8.4.190's YOLO11n (2,624,080) less its 16 fixed DFL
projection weights; backbone (layers 0-10) 1,365,472. Modules follow Ultralytics' layer order (docs/models.md).

    python tools/train.py configs/yolo11n_tal.py
    python tools/test.py configs/yolo11n_tal.py yolo11n_converted.pth      # Ultralytics weights, see README
    python tools/train.py configs/yolo11n_tal.py --cfg-options 'model.head.loss.assigner=atss'
"""

_base_ = [
    "common/models/yolo11.py",
    "common/data/coco.py",
    "common/schedules/linear_500e.py",
    "common/runtime.py",
]
