"""YOLOX's head and loss as a config piece (80 classes): decoupled head with a 1x1 stem (128 channels,
YOLOX-s), objectness on the box branch and YOLOX's box coding (``YOLOXCoder``: centre offset from the
cell, log size, in strides); YOLOX's loss: SimOTA, BCE classification of the positives against the
IoU of their predicted box, BCE objectness over every prior, ``1 - IoU**2`` box loss (weight 5), all
divided by the number of positives; L1 on the raw box outputs in the last 15 epochs
(``reg_last_epochs``). List it after the file giving the backbone and neck.
"""

from detkit.anchors import PointGenerator
from detkit.assigners import SimOTAAssigner
from detkit.coders import YOLOXCoder
from detkit.config import L
from detkit.losses import BCEWithLogitsLoss, IoULoss, L1Loss
from detkit.models import DecoupledHead, Detector, YOLOLossPipeline

model = L(Detector)(
    head=L(DecoupledHead)(
        num_classes=80,
        prior_generator=L(PointGenerator)(strides=[8, 16, 32]),
        coder=L(YOLOXCoder)(),
        stem_channels=128,
        objectness=True,
        bias_init="prior_prob",
        prior_prob=0.01,
        loss=L(YOLOLossPipeline)(
            assigner=L(SimOTAAssigner)(center_radius=2.5, candidate_topk=10, iou_weight=3.0),
            loss_cls=L(BCEWithLogitsLoss)(),
            loss_obj=L(BCEWithLogitsLoss)(),
            loss_box=L(IoULoss)(mode="iou", penalty="square"),
            loss_reg=L(L1Loss)(),
            reg_last_epochs=15,
            cls_target="iou",
            obj_target="one",
            obj_normalize="num_pos",
            loss_weights=dict(cls=1.0, obj=1.0, box=5.0, reg=1.0),
        ),
        score_thr=0.001,
        nms_iou_thr=0.65,
        max_per_img=300,
        multi_label=False,
    ),
)
