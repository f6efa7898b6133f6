"""RTMDet's head and loss as a config piece (80 classes): anchor-free decoupled head with plain ltrb
distance boxes; dynamic soft label assignment (``DynamicSoftLabelAssigner(topk=13, iou_weight=3.0,
soft_center_radius=3.0)``), quality focal loss on the assigner's IoU target over every prior and GIoU
box loss weighted by that target (RTMDet's weights: 1 and 2). List it after the file giving the
backbone and neck."""

from detkit.anchors import PointGenerator
from detkit.assigners import DynamicSoftLabelAssigner
from detkit.coders import DistanceCoder
from detkit.config import L
from detkit.losses import IoULoss, QualityFocalLoss
from detkit.models import DecoupledHead, Detector, YOLOLossPipeline

model = L(Detector)(
    head=L(DecoupledHead)(
        num_classes=80,
        prior_generator=L(PointGenerator)(strides=[8, 16, 32]),
        coder=L(DistanceCoder)(normalize=True),
        loss=L(YOLOLossPipeline)(
            assigner=L(DynamicSoftLabelAssigner)(topk=13, iou_weight=3.0, soft_center_radius=3.0),
            loss_cls=L(QualityFocalLoss)(beta=2.0),
            loss_box=L(IoULoss)(mode="giou"),
            cls_target="auto",  # the rule's score_target (DSL here), one-hot for a box-only rule swapped in
            box_weight="cls_target",
            loss_weights=dict(cls=1.0, box=2.0),
        ),
        score_thr=0.001,
        nms_iou_thr=0.65,
        max_per_img=300,
    ),
)
