"""YOLOX-s: CSPDarknet (Focus stem, SPP in the last stage) -> PAFPN (C3) -> decoupled head with objectness.

8,968,255 parameters (YOLOX-s: 8.97M): backbone and neck equal yolox 0.3.0's ``YOLOPAFPN``, the head
is YOLOX's (per level a 1x1 stem to 128 channels, two 3x3 convs per branch, class / box / objectness
1x1 convs). Boxes are YOLOX's (``YOLOXCoder``: centre offset from the cell, log size, in strides).
Loss as YOLOX's: SimOTA, BCE classification of the positives against the IoU of their predicted box,
BCE objectness over every prior, ``1 - IoU**2`` box loss (weight 5), all divided by the number of
positives; L1 on the raw box outputs in the last 15 epochs (``reg_last_epochs``).
"""

from detkit.anchors import PointGenerator
from detkit.assigners import SimOTAAssigner
from detkit.coders import YOLOXCoder
from detkit.config import L
from detkit.losses import BCEWithLogitsLoss, IoULoss, L1Loss
from detkit.models import CSPPAN, CSPDarknet, DecoupledHead, Detector, YOLOLossPipeline

model = L(Detector)(
    backbone=L(CSPDarknet)(arch="yolox", scale="s", out_indices=(3, 4, 5)),
    neck=L(CSPPAN)(layout="yolox", num_blocks=1),
    head=L(DecoupledHead)(
        num_classes=80,
        prior_generator=L(PointGenerator)(strides=[8, 16, 32]),
        coder=L(YOLOXCoder)(),
        stem_channels=128,
        objectness=True,
        bias_init="prior_prob",
        prior_prob=0.01,
        norm_eps=1e-3,
        norm_momentum=0.03,
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
