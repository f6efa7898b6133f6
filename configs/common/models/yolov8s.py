"""YOLOv8-s: CSPDarknet (C2f stages, SPPF) -> CSPPAN (C2f) -> anchor-free decoupled DFL head, 80 classes.

Ultralytics' YOLOv8s as data: the backbone has exactly Ultralytics 8.4.190's 5,079,712 parameters
(layers 0-9), backbone + neck 9,019,552, and the whole detector 11,166,544 (Ultralytics: 11,166,560,
16 of them its fixed DFL projection, which detkit's ``DFLCoder`` holds as a constant). BatchNorm
eps 1e-3 / momentum 0.03 as Ultralytics trains. Loss as YOLOv8's ``v8DetectionLoss``: task-aligned
assignment exactly as Ultralytics 8.4 runs it (the ``tal-ultralytics`` preset: top 10, alpha 0.5,
beta 6, CIoU metric, GTs under 16 px enlarged for the centre test, zero-metric candidates kept),
BCE against the normalised alignment metric over every prior, CIoU and DFL weighted by that target,
gains box 7.5, cls 0.5, dfl 1.5.
"""

from detkit.anchors import PointGenerator
from detkit.assigners import TaskAlignedAssigner
from detkit.coders import DFLCoder
from detkit.config import L
from detkit.losses import BCEWithLogitsLoss, DistributionFocalLoss, IoULoss
from detkit.models import CSPPAN, CSPDarknet, DecoupledHead, Detector, YOLOLossPipeline

model = L(Detector)(
    backbone=L(CSPDarknet)(arch="yolov8", scale="s", out_indices=(3, 4, 5)),
    neck=L(CSPPAN)(layout="yolov8", num_blocks=1),
    head=L(DecoupledHead)(
        num_classes=80,
        prior_generator=L(PointGenerator)(strides=[8, 16, 32]),
        coder=L(DFLCoder)(reg_max=16),
        bias_init="yolov8",
        norm_eps=1e-3,
        norm_momentum=0.03,
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
        nms_iou_thr=0.7,
        max_per_img=300,
        multi_label=True,
    ),
)
