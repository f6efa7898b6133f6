"""The demo's network (``shapes_atss.py``: YOLOv5-layout CSPDarknet at depth 0.33 / width 0.125, PAN with
SPP) with YOLOv8's head and loss (``common/heads/yolov8.py``) instead of the anchor head: anchor-free
decoupled head with DFL boxes, task-aligned assignment as Ultralytics runs it, BCE on the alignment
target, CIoU + DFL weighted by it. Only the head and its loss differ from ``shapes_atss.py`` (branch
widths 32, its NMS threshold), so the two compare head + assignment on the same features and schedule.
``make demo`` trains this config for 15 epochs (the anchor head's 17-epoch wall time): 0.708 AP vs 0.637.

    python tools/train.py configs/shapes_yolov8_tal.py
    python tools/train.py configs/shapes_yolov8_tal.py --cfg-options model.head.loss.assigner=atss

The head's ``cls_target="auto"`` follows the rule: TAL's alignment target, one-hot for a box-only
rule such as ATSS, so any preset (``atss``, ``iou``, ``fcos``, ``grid``, ``simota``, ``dsl``) or call
(``'model.head.loss.assigner=ATSSAssigner(topk=9)'``) swaps in with this one override.
"""

from detkit.data import SHAPE_CLASSES

_base_ = ["shapes_atss.py", "common/heads/yolov8.py"]

model = dict(head=dict(num_classes=len(SHAPE_CLASSES), cls_channels=32, box_channels=32, bias_init_size=320,
                       nms_iou_thr=0.65))
