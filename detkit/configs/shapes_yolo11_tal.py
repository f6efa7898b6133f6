"""YOLO11's layout on the shapes set at the demo's budget: ``shapes_yolov8_tal.py`` (the demo) with its
YOLOv5-layout network swapped for YOLO11's (``common/models/yolo11.py``: C3k2 stages, SPPF, C2PSA attention,
a C3k2 CSPPAN, the depthwise class branch, box biases 2.0); everything else is the demo's: YOLOv8's loss and
task-aligned rule (``tal-ultralytics``), head branches 32 wide, 320 px, the shapes pipeline, SGD lr 0.02 with
warm-up and cosine decay, EMA, mosaic off for the last 3 epochs.

Width: YOLO11-n's depth (0.5) at half its width (``widen_factor=0.125``, the demo backbone's width): 656,847
parameters (the demo's network: 838,207). A training step (batch 16, 320 px, 2 CPU threads) takes 1.09x the
demo's (``benchmarks/head_step.py``, on a loaded machine; YOLO11-n's full width: 1.35x), so 14 epochs fit in
the wall time of the demo's 15 (``make demo``).

    python tools/train.py configs/shapes_yolo11_tal.py
    python tools/test.py configs/shapes_yolo11_tal.py work_dirs/shapes_yolo11_tal/best.pth
    python tools/train.py configs/shapes_yolo11_tal.py --cfg-options model.backbone.widen_factor=0.25   # YOLO11-n
"""

from detkit.data import SHAPE_CLASSES

_base_ = [
    "common/models/yolo11.py",
    "common/data/shapes.py",
    "common/schedules/shapes_14e.py",  # shapes_short.py + runtime.py: 14 epochs, lr 0.02, no mosaic in the last 3
]

model = dict(
    backbone=dict(scale=None, deepen_factor=0.5, widen_factor=0.125, max_channels=1024),
    head=dict(num_classes=len(SHAPE_CLASSES), cls_channels=32, box_channels=32, bias_init_size=320,
              nms_iou_thr=0.65),
)
