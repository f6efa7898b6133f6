"""``shapes_tiny.py`` with a YOLOv8-style decoupled head (DFL boxes, task-aligned assignment, no objectness)."""

from detkit.anchors import PointGenerator
from detkit.assigners import TaskAlignedAssigner
from detkit.coders import DFLCoder
from detkit.config import L
from detkit.data import SHAPE_CLASSES
from detkit.losses import DistributionFocalLoss, IoULoss
from detkit.models import DecoupledHead, YOLOLossPipeline

_base_ = ["shapes_tiny.py"]

model = dict(head=L(DecoupledHead)(
    num_classes=len(SHAPE_CLASSES),
    prior_generator=L(PointGenerator)(strides=[8, 16, 32]),
    coder=L(DFLCoder)(reg_max=8),
    cls_channels=16,
    box_channels=16,
    bias_init="yolov8",
    bias_init_size=128,
    loss=L(YOLOLossPipeline)(
        assigner=L(TaskAlignedAssigner)(topk=10, alpha=0.5, beta=6.0, iou_mode="ciou", resolve="in_gts"),
        loss_box=L(IoULoss)(mode="ciou"),
        loss_dfl=L(DistributionFocalLoss)(),
        cls_target="assigner",
        box_weight="cls_target",
        loss_weights=dict(cls=0.5, box=7.5, dfl=1.5),
    ),
))
