"""The demo's network (``shapes_atss.py``) with RTMDet's head and loss (``common/heads/rtmdet.py``):
anchor-free decoupled head with plain distance boxes, dynamic soft label assignment
(``DynamicSoftLabelAssigner(topk=13, iou_weight=3.0, soft_center_radius=3.0)``), quality focal loss on
the assigner's IoU target and GIoU box loss weighted by it (RTMDet's weights: 1 and 2). Only the head
and its loss differ from ``shapes_atss.py`` (branch widths 32).

    python tools/train.py configs/shapes_rtmdet_dsl.py
    python tools/train.py configs/shapes_rtmdet_dsl.py \\
        --cfg-options 'model.head.loss.assigner=DynamicSoftLabelAssigner(cls_cost="gt_class", candidates_only=False)'
"""

from detkit.data import SHAPE_CLASSES

_base_ = ["shapes_atss.py", "common/heads/rtmdet.py"]

model = dict(head=dict(num_classes=len(SHAPE_CLASSES), cls_channels=32, box_channels=32))
