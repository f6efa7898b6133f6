"""YOLOv8-s on COCO 2017 with task-aligned assignment, as Ultralytics trains it.

CSPDarknet (C2f, SPPF) - CSPPAN (C2f) - decoupled DFL head (``common/models/yolov8s.py``), TAL
(top 10, alpha 0.5, beta 6) with BCE on the alignment target, CIoU + DFL; mosaic + affine (scale 0.5,
translate 0.1) + HSV + flip at 640; SGD with YOLOv8's warm-up and linear decay over 500 epochs
(``common/schedules/linear_500e.py``), EMA.

    python tools/train.py configs/yolov8s_tal.py
    python tools/test.py configs/yolov8s_tal.py yolov8s_converted.pth       # Ultralytics weights, see README
    python tools/train.py configs/yolov8s_tal.py --cfg-options 'model.head.loss.assigner=ATSSAssigner(topk=9)'

The swap needs no other override: the loss's ``cls_target="auto"`` learns the rule's soft target
when it has one (TAL, SimOTA, DSL) and one-hot otherwise (ATSS, max-IoU, FCOS, grid); presets work
too (``model.head.loss.assigner=atss``).
"""

_base_ = [
    "common/models/yolov8s.py",
    "common/data/coco.py",
    "common/schedules/linear_500e.py",
    "common/runtime.py",
]
