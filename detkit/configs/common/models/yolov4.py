"""YOLOv4: CSPDarknet53 -> SPP + PANet -> YOLO head, 9 COCO anchors, 80 classes (64.36M params).

Box loss CIoU, classification and objectness BCE, ATSS assignment (topk=9). Grid sensitivity
(Darknet's ``scale_x_y``: 1.2 / 1.1 / 1.05 per level) is the coder's single ``scale_x_y``.
"""

from detkit.anchors import YOLOV4_COCO_ANCHORS, YOLOAnchorGenerator
from detkit.assigners import ATSSAssigner
from detkit.coders import YOLOCoder
from detkit.config import L
from detkit.losses import BCEWithLogitsLoss, IoULoss
from detkit.models import PAN, CSPDarknet, Detector, YOLOHead, YOLOLossPipeline
from detkit.samplers import PseudoSampler

model = L(Detector)(
    backbone=L(CSPDarknet)(arch="yolov4", deepen_factor=1.0, widen_factor=1.0,
                           out_indices=(3, 4, 5)),
    neck=L(PAN)(spp=True, spp_kernels=(5, 9, 13), act="leaky"),
    head=L(YOLOHead)(
        num_classes=80,
        prior_generator=L(YOLOAnchorGenerator)(base_sizes=YOLOV4_COCO_ANCHORS, strides=[8, 16, 32]),
        coder=L(YOLOCoder)(scale_x_y=1.1),
        loss=L(YOLOLossPipeline)(
            assigner=L(ATSSAssigner)(topk=9),
            sampler=L(PseudoSampler)(),
            loss_cls=L(BCEWithLogitsLoss)(),
            loss_obj=L(BCEWithLogitsLoss)(),
            loss_box=L(IoULoss)(mode="ciou"),
        ),
        score_thr=0.001,
        nms_iou_thr=0.65,
        max_per_img=300,
        multi_label=True,
    ),
)
