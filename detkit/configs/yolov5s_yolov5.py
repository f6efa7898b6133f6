"""YOLOv5-s (v6.0+) on COCO 2017 with YOLOv5's own label assignment, loss and box coding.

YOLOv5's ``yolov5s.yaml`` as data: CSPDarknet with the 6x6 stem, C3 stages and SPPF
(``arch="yolov5-sppf"``, scale s: depth 0.33, width 0.5), its PANet head (``CSPPAN`` layout
``yolox``: 1x1 reduce convs, C3 blocks without shortcut), and ``Detect``: per level one 1x1 conv to
3 x 85 outputs (``YOLOHead(feat_channels=0)``). 7,235,389 parameters, the ``yolov5`` package's
(7.0.14) ``Model("yolov5s.yaml")`` count; BatchNorm eps 1e-3 / momentum 0.03 everywhere.

Assignment ``YOLOv5Assigner`` (width / height ratio under 4 to an anchor, the GT's cell and its two
nearest neighbours), YOLOv5's COCO anchors, ``YOLOCoder`` (centre ``2 sigmoid - 0.5`` cells, size
``(2 sigmoid)**2`` anchors), CIoU box loss, BCE class loss on the positives and BCE objectness on
every prior against the detached IoU, objectness balance 4 / 1 / 0.4 per level; gains box 0.05,
obj 1.0, cls 0.5 (over the 80 classes) from ``hyp.scratch-low.yaml``; the loss times the batch size.
SGD lr 0.01 (nesterov, momentum 0.937, weight decay 5e-4 at nominal batch 64), 3 warm-up epochs
(bias LR from 0.1, momentum from 0.8), linear decay to 1% over 300 epochs; mosaic + affine (scale
0.5, translate 0.1) + HSV + flip at 640, EMA.

Where it is not YOLOv5's training (measured by ``benchmarks/parity_losses_yolov5.py``): one label per
prior (YOLOv5 trains box and class losses on every (GT, anchor, cell) claim, a prior claimed twice
counting twice: 4% of coco128's claims at 640); the prediction biases start at 1% (YOLOv5 sets
objectness from 8 objects per 640 image and classes at 0.6 / 79). YOLOv5's normalisation of the box and
class terms (each level's mean, the levels summed: ``pos_normalize="level_sum"``) and its objectness
target (the CIoU: ``obj_target="ciou"``) are set below. As in YOLOv5, mosaic stays on to the last epoch
(``schedule.no_mosaic_last_epochs=0``) and crowd regions are plain negatives (``ignore_iof_thr=None``).

    python tools/train.py configs/yolov5s_yolov5.py
    python tools/compare_assigners.py configs/yolov5s_yolov5.py --assigners yolov5 atss --images 200
"""

from detkit.anchors import YOLOAnchorGenerator
from detkit.assigners import YOLOv5Assigner
from detkit.coders import YOLOCoder
from detkit.config import L
from detkit.losses import BCEWithLogitsLoss, IoULoss
from detkit.models import CSPPAN, CSPDarknet, Detector, YOLOHead, YOLOLossPipeline

_base_ = [
    "common/data/coco.py",
    "common/schedules/linear_500e.py",
    "common/runtime.py",
]

# YOLOv5's COCO anchors (w, h in pixels at 640), strides 8, 16, 32 (``yolov5s.yaml``).
YOLOV5_COCO_ANCHORS = [
    [(10, 13), (16, 30), (33, 23)],
    [(30, 61), (62, 45), (59, 119)],
    [(116, 90), (156, 198), (373, 326)],
]

model = L(Detector)(
    backbone=L(CSPDarknet)(arch="yolov5-sppf", scale="s", out_indices=(3, 4, 5)),
    neck=L(CSPPAN)(layout="yolox", num_blocks=1),
    head=L(YOLOHead)(
        num_classes=80,
        prior_generator=L(YOLOAnchorGenerator)(base_sizes=YOLOV5_COCO_ANCHORS, strides=[8, 16, 32]),
        coder=L(YOLOCoder)(scale_x_y=2.0, size_mode="sigmoid_square"),
        feat_channels=0,
        loss=L(YOLOLossPipeline)(
            assigner=L(YOLOv5Assigner)(anchor_t=4.0, offset=0.5),
            loss_cls=L(BCEWithLogitsLoss)(),
            loss_obj=L(BCEWithLogitsLoss)(),
            loss_box=L(IoULoss)(mode="ciou"),
            loss_weights=dict(cls=0.5 / 80, obj=1.0, box=0.05),
            obj_level_weights=(4.0, 1.0, 0.4),
            obj_target="ciou",
            obj_normalize="level_mean",
            pos_normalize="level_sum",
            ignore_iof_thr=None,
        ),
        score_thr=0.001,
        nms_iou_thr=0.6,
        max_per_img=300,
        multi_label=True,
    ),
)
train = dict(epochs=300)
# YOLOv5's warm-up: at least 100 iterations, not capped at epochs - 1 (Ultralytics 8.x's, in linear_500e, are not)
schedule = dict(no_mosaic_last_epochs=0, lr=dict(min_warmup_iters=100, warmup_spare_last_epoch=False))
