"""The demo's network (``shapes_atss.py``: YOLOv5-layout CSPDarknet at depth 0.33 / width 0.125, PAN with
SPP) with YOLOv8's head and loss instead of the anchor head: anchor-free decoupled head with DFL
boxes (``reg_max=16``), task-aligned assignment (top 10, alpha 0.5, beta 6, CIoU) and BCE on the
alignment target, CIoU + DFL weighted by it. Only the head and its loss differ from the demo, so the
two compare head + assignment on the same features and schedule.

    python tools/train.py configs/shapes_yolov8_tal.py
    python tools/train.py configs/shapes_yolov8_tal.py --cfg-options 'model.head.loss.assigner=ATSSAssigner(topk=9)' model.head.loss.cls_target=onehot
"""

from detkit.anchors import PointGenerator
from detkit.assigners import TaskAlignedAssigner
from detkit.coders import DFLCoder
from detkit.config import L
from detkit.data import SHAPE_CLASSES
from detkit.losses import BCEWithLogitsLoss, DistributionFocalLoss, IoULoss
from detkit.models import DecoupledHead, YOLOLossPipeline

_base_ = ["shapes_atss.py"]

model = dict(
    head=L(DecoupledHead)(
        num_classes=len(SHAPE_CLASSES),
        prior_generator=L(PointGenerator)(strides=[8, 16, 32]),
        coder=L(DFLCoder)(reg_max=16),
        cls_channels=32,
        box_channels=32,
        bias_init="yolov8",
        bias_init_size=320,
        loss=L(YOLOLossPipeline)(
            assigner=L(TaskAlignedAssigner)(topk=10, alpha=0.5, beta=6.0, iou_mode="ciou", resolve="all_gts",
                                          center_min_side=16.0, keep_zero_metric=True),
            loss_cls=L(BCEWithLogitsLoss)(),
            loss_box=L(IoULoss)(mode="ciou"),
            loss_dfl=L(DistributionFocalLoss)(),
            cls_target="assigner",
            box_weight="cls_target",
            loss_weights=dict(cls=0.5, box=7.5, dfl=1.5),
        ),
        score_thr=0.001,
        nms_iou_thr=0.65,
        max_per_img=300,
    ),
)
