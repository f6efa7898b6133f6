"""The demo's network (``shapes_atss.py``: YOLOv5-layout CSPDarknet at depth 0.33 / width 0.125, PAN with
SPP) with YOLOX's head and loss instead of the anchor head: decoupled head with objectness and
YOLOX's box coding, SimOTA, IoU-aware classification target, ``1 - IoU**2`` box loss, losses divided
by the number of positives, L1 in the last 3 epochs (the epochs without mosaic). Only the head and its
loss differ from the demo.

    python tools/train.py configs/shapes_yolox_simota.py
"""

from detkit.anchors import PointGenerator
from detkit.assigners import SimOTAAssigner
from detkit.coders import YOLOXCoder
from detkit.config import L
from detkit.data import SHAPE_CLASSES
from detkit.losses import BCEWithLogitsLoss, IoULoss, L1Loss
from detkit.models import DecoupledHead, YOLOLossPipeline

_base_ = ["shapes_atss.py"]

model = dict(
    head=L(DecoupledHead)(
        num_classes=len(SHAPE_CLASSES),
        prior_generator=L(PointGenerator)(strides=[8, 16, 32]),
        coder=L(YOLOXCoder)(),
        stem_channels=32,
        objectness=True,
        loss=L(YOLOLossPipeline)(
            assigner=L(SimOTAAssigner)(center_radius=2.5, candidate_topk=10, iou_weight=3.0),
            loss_cls=L(BCEWithLogitsLoss)(),
            loss_obj=L(BCEWithLogitsLoss)(),
            loss_box=L(IoULoss)(mode="iou", penalty="square"),
            loss_reg=L(L1Loss)(),
            reg_last_epochs=3,
            cls_target="iou",
            obj_target="one",
            obj_normalize="num_pos",
            loss_weights=dict(cls=1.0, obj=1.0, box=5.0, reg=1.0),
        ),
        score_thr=0.001,
        nms_iou_thr=0.65,
        max_per_img=300,
    ),
)
