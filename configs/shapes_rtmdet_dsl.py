"""The demo's network (``shapes_atss.py``) with RTMDet's head and loss: anchor-free decoupled head
with plain distance boxes, dynamic soft label assignment (``DynamicSoftLabelAssigner(topk=13,
iou_weight=3.0, soft_center_radius=3.0)``), quality focal loss on the assigner's IoU target and GIoU
box loss (RTMDet's weights: 1 and 2). Only the head and its loss differ from the demo.

    python tools/train.py configs/shapes_rtmdet_dsl.py
    python tools/train.py configs/shapes_rtmdet_dsl.py \
        --cfg-options 'model.head.loss.assigner=DynamicSoftLabelAssigner(cls_cost="gt_class", candidates_only=False)'
"""

from detkit.anchors import PointGenerator
from detkit.assigners import DynamicSoftLabelAssigner
from detkit.coders import DistanceCoder
from detkit.config import L
from detkit.data import SHAPE_CLASSES
from detkit.losses import IoULoss, QualityFocalLoss
from detkit.models import DecoupledHead, YOLOLossPipeline

_base_ = ["shapes_atss.py"]

model = dict(
    head=L(DecoupledHead)(
        num_classes=len(SHAPE_CLASSES),
        prior_generator=L(PointGenerator)(strides=[8, 16, 32]),
        coder=L(DistanceCoder)(normalize=True),
        cls_channels=32,
        box_channels=32,
        loss=L(YOLOLossPipeline)(
            assigner=L(DynamicSoftLabelAssigner)(topk=13, iou_weight=3.0, soft_center_radius=3.0),
            loss_cls=L(QualityFocalLoss)(beta=2.0),
            loss_box=L(IoULoss)(mode="giou"),
            cls_target="assigner",
            loss_weights=dict(cls=1.0, box=2.0),
        ),
        score_thr=0.001,
        nms_iou_thr=0.65,
        max_per_img=300,
    ),
)
