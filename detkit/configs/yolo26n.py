"""YOLO26-n on COCO 2017: Ultralytics' end-to-end (NMS-free) detector.

CSPDarknet (C3k2 stages, YOLO26's SPPF with a shortcut, C2PSA attention) - CSPPAN (C3k2 with C3k inner blocks,
the P5 block with attention) - decoupled head with YOLO11's depthwise class branch, 4 plain ltrb distances per
prior (``reg_max=1``, no DFL) and one-to-one copies of both branches (``common/models/yolo26.py``), trained by
``E2ELoss``'s recipe (``common/heads/yolo26.py``: task-aligned one-to-many and one-to-one rules, CIoU and the
DFL-free L1 box loss, ProgLoss branch weights 0.8 -> 0.1); inference reads the one-to-one branch without NMS.
YOLOv8's data pipeline (``common/data/coco.py``); Ultralytics 8.4's schedule for it: 100 epochs of MuSGD
(``common/schedules/yolo26.py``).

2,572,280 parameters with 80 classes: Ultralytics 8.4.190's YOLO26n (2,572,280), the same (no fixed DFL
projection); backbone (layers 0-10) 1,365,472. Modules follow Ultralytics' layer order (docs/models.md).

    python tools/train.py configs/yolo26n.py
    python tools/test.py configs/yolo26n.py yolo26n_converted.pth   # Ultralytics weights, see README
"""

_base_ = [
    "common/models/yolo26.py",
    "common/data/coco.py",
    "common/schedules/yolo26.py",
    "common/runtime.py",
]
