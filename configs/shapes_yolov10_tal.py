"""``shapes_yolov8_tal.py`` with YOLOv10's consistent dual assignment: one-to-one branches (the same
layout, on detached features) trained beside the one-to-many ones by the same task-aligned rule at
``topk=1`` with the same metric. Inference reads the one-to-one branch without NMS by default.

    python tools/train.py configs/shapes_yolov10_tal.py
    python tools/test.py configs/shapes_yolov10_tal.py work_dirs/shapes_yolov10_tal/best.pth        # one-to-one, no NMS
    python tools/test.py configs/shapes_yolov10_tal.py work_dirs/shapes_yolov10_tal/best.pth \\
        --cfg-options model.head.branch=one2many model.head.nms=True                                  # one-to-many + NMS
"""

from detkit.assigners import TaskAlignedAssigner
from detkit.config import L
from detkit.losses import BCEWithLogitsLoss, DistributionFocalLoss, IoULoss
from detkit.models import YOLOLossPipeline

_base_ = ["shapes_yolov8_tal.py"]

model = dict(
    head=dict(
        one2one=True,
        one2one_loss=L(YOLOLossPipeline)(
            assigner=L(TaskAlignedAssigner)(topk=1, alpha=0.5, beta=6.0, iou_mode="ciou", resolve="all_gts",
                                          center_min_side=16.0, keep_zero_metric=True),
            loss_cls=L(BCEWithLogitsLoss)(),
            loss_box=L(IoULoss)(mode="ciou"),
            loss_dfl=L(DistributionFocalLoss)(),
            cls_target="assigner",
            box_weight="cls_target",
            loss_weights=dict(cls=0.5, box=7.5, dfl=1.5),
        ),
    ),
)
