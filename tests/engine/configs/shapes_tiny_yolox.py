"""``shapes_tiny.py`` with a YOLOX-style decoupled head (objectness, YOLOX box coding, SimOTA, late L1)."""

from detkit.anchors import PointGenerator
from detkit.assigners import SimOTAAssigner
from detkit.coders import YOLOXCoder
from detkit.config import L
from detkit.data import SHAPE_CLASSES
from detkit.losses import IoULoss, L1Loss
from detkit.models import DecoupledHead, YOLOLossPipeline

_base_ = ["shapes_tiny.py"]

model = dict(head=L(DecoupledHead)(
    num_classes=len(SHAPE_CLASSES),
    prior_generator=L(PointGenerator)(strides=[8, 16, 32]),
    coder=L(YOLOXCoder)(),
    stem_channels=16,
    objectness=True,
    loss=L(YOLOLossPipeline)(
        assigner=L(SimOTAAssigner)(),
        loss_box=L(IoULoss)(mode="iou", penalty="square"),
        loss_reg=L(L1Loss)(),
        reg_last_epochs=1,
        cls_target="iou",
        obj_target="one",
        obj_normalize="num_pos",
        loss_weights=dict(cls=1.0, obj=1.0, box=5.0, reg=1.0),
    ),
))
