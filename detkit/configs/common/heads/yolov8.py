"""YOLOv8's head and loss as a config piece (80 classes): anchor-free decoupled head with DFL boxes
(``reg_max=16``) and YOLOv8's bias init; ``v8DetectionLoss`` in detkit's terms: task-aligned
assignment exactly as Ultralytics 8.4 runs it (the ``tal-ultralytics`` preset: top 10, alpha 0.5,
beta 6, CIoU metric, GTs under 16 px enlarged for the centre test, zero-metric candidates kept), BCE
against the normalised alignment metric over every prior, CIoU and DFL weighted by that target,
gains box 7.5, cls 0.5, dfl 1.5. A config lists it after the file giving the backbone and neck:
``_base_ = ["shapes_atss.py", "common/heads/yolov8.py"]`` swaps the demo's anchor head for it.
"""

from detkit.anchors import PointGenerator
from detkit.assigners import TaskAlignedAssigner
from detkit.coders import DFLCoder
from detkit.config import L
from detkit.losses import BCEWithLogitsLoss, DistributionFocalLoss, IoULoss
from detkit.models import DecoupledHead, Detector, YOLOLossPipeline

model = L(Detector)(
    head=L(DecoupledHead)(
        num_classes=80,
        prior_generator=L(PointGenerator)(strides=[8, 16, 32]),
        coder=L(DFLCoder)(reg_max=16),
        bias_init="yolov8",
        loss=L(YOLOLossPipeline)(
            assigner=L(TaskAlignedAssigner)(topk=10, alpha=0.5, beta=6.0, iou_mode="ciou", resolve="all_gts",
                                            center_min_side=16.0, keep_zero_metric=True),
            loss_cls=L(BCEWithLogitsLoss)(),
            loss_box=L(IoULoss)(mode="ciou"),
            loss_dfl=L(DistributionFocalLoss)(),
            cls_target="auto",  # the rule's score_target (TAL here), one-hot for a box-only rule swapped in
            box_weight="cls_target",
            loss_weights=dict(cls=0.5, box=7.5, dfl=1.5),
        ),
        score_thr=0.001,
        nms_iou_thr=0.7,
        max_per_img=300,
        multi_label=True,
    ),
)
