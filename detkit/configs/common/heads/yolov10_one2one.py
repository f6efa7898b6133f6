"""YOLOv10's consistent dual assignment on top of ``yolov8.py``'s head: one-to-one branches (the same
layout, on detached features) trained beside the one-to-many ones by the same task-aligned rule at
``topk=1`` with the same metric and loss; inference reads the one-to-one branch without NMS.
List it after ``yolov8.py`` (or a config built on it)."""

from detkit.assigners import TaskAlignedAssigner
from detkit.config import L
from detkit.losses import BCEWithLogitsLoss, DistributionFocalLoss, IoULoss
from detkit.models import YOLOLossPipeline

model = dict(
    head=dict(
        one2one=True,
        one2one_loss=L(YOLOLossPipeline)(
            assigner=L(TaskAlignedAssigner)(topk=1, alpha=0.5, beta=6.0, iou_mode="ciou", resolve="all_gts",
                                            center_min_side=16.0, keep_zero_metric=True),
            loss_cls=L(BCEWithLogitsLoss)(),
            loss_box=L(IoULoss)(mode="ciou"),
            loss_dfl=L(DistributionFocalLoss)(),
            cls_target="auto",  # the rule's score_target (TAL here), one-hot for a box-only rule swapped in
            box_weight="cls_target",
            loss_weights=dict(cls=0.5, box=7.5, dfl=1.5),
        ),
    ),
)
