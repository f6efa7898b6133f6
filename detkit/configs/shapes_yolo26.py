"""YOLO26's layout and end-to-end recipe on the shapes set at the demo's budget: ``shapes_yolo11_tal.py``'s
set-up (the demo's data, schedule and optimizer, head branches 32 wide, 320 px) with YOLO26's network and head
(``common/models/yolo26.py``, ``common/heads/yolo26.py``): C3k2 stages, YOLO26's SPPF, C2PSA, the P5 neck block
with attention; a one-to-many and a one-to-one branch, plain ltrb distances (no DFL: CIoU + the image-normalised
L1), ``tal-ultralytics`` on the one-to-many branch and ``tal-e2e-ultralytics`` (top 7, then top 1) on the
one-to-one branch, their losses blended by ProgLoss (one-to-many weight 0.8 -> 0.1 over the run); inference
reads the one-to-one branch without NMS (top 300 scores).

Width: YOLO26-n's depth (0.5) at half its width (``widen_factor=0.125``): 785,126 parameters (the demo's
network: 838,207). A training step takes 1.08x the demo's (``benchmarks/head_step.py``, batch 16, 320 px, 2 CPU
threads, a loaded machine; YOLO26-n's full width: 1.78x), so 14 epochs fit in the demo's 15-epoch wall time.
Optimizer: the demo's SGD, not YOLO26's MuSGD (``common/schedules/yolo26.py``): Ultralytics' own
``optimizer=auto`` picks MuSGD only above 10,000 iterations, and this run has ~900.

    python tools/train.py configs/shapes_yolo26.py
    python tools/test.py configs/shapes_yolo26.py work_dirs/shapes_yolo26/best.pth                 # no NMS
    python tools/test.py configs/shapes_yolo26.py work_dirs/shapes_yolo26/best.pth \\
        --cfg-options model.head.nms=True                                                       # + NMS
    python benchmarks/one2one.py configs/shapes_yolo26.py work_dirs/shapes_yolo26/best.pth     # both branches
"""

from detkit.data import SHAPE_CLASSES

_base_ = [
    "common/models/yolo26.py",
    "common/data/shapes.py",
    "common/schedules/shapes_14e.py",  # shapes_short.py + runtime.py: 14 epochs, lr 0.02, no mosaic in the last 3
]

model = dict(
    backbone=dict(scale=None, deepen_factor=0.5, widen_factor=0.125, max_channels=1024),
    head=dict(num_classes=len(SHAPE_CLASSES), cls_channels=32, box_channels=32, bias_init_size=320,
              nms_iou_thr=0.65),
)
