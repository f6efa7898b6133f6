"""YOLO26's end-to-end head and losses as a config piece (80 classes), in the loss pipeline's terms.

The head is ``yolo11.py``'s (YOLO11's depthwise class branch, box biases 2.0, BatchNorm eps 1e-3 / momentum
0.03) with 4 plain ltrb distances per prior in strides (``DistanceCoder``, Ultralytics' ``reg_max=1``: no DFL)
and one-to-one copies of the box and class branches on detached features (``one2one=True``). Ultralytics
8.4's ``E2ELoss`` is written as two pipelines and a schedule:

* one-to-many (``loss``): ``tal-ultralytics`` (top 10, alpha 0.5, beta 6, CIoU metric, GTs under 16 px enlarged
  for the centre test), BCE against the normalised metric over every prior, CIoU and the DFL-free L1
  (``ImageL1Loss``: ltrb distances over the input's width / height, Ultralytics' ``l1_loss``, here ``loss_reg``),
  both weighted by that target; gains box 7.5, cls 0.5, L1 1.5 (``cfg/default.yaml``'s box, cls, dfl);
* one-to-one (``one2one_loss``): the same losses with ``tal-e2e-ultralytics`` (top 7, then each GT's top 1:
  ``topk2=1``), returned as ``loss_o2o_*``;
* ``branch_weights=ProgressiveWeights(start=0.8, end=0.1)`` (ProgLoss): the one-to-many weight moves from 0.8 at
  the first epoch to 0.1 at the last, the one-to-one weight is 1 minus it; the trainer sets them each epoch.

Inference reads the one-to-one branch without NMS: the top ``max_per_img=300`` (prior, class) scores.
A config lists it after the file giving the backbone and neck.
"""

from detkit.assigners import TaskAlignedAssigner
from detkit.coders import DistanceCoder
from detkit.config import L
from detkit.losses import BCEWithLogitsLoss, ImageL1Loss, IoULoss
from detkit.models import YOLOLossPipeline
from detkit.models.heads.branch_weights import ProgressiveWeights

_base_ = ["yolo11.py"]

model = dict(
    head=dict(
        coder=L(DistanceCoder)(normalize=True),
        loss=dict(loss_dfl=None, loss_reg=L(ImageL1Loss)(), loss_weights=dict(cls=0.5, box=7.5, reg=1.5)),
        one2one=True,
        one2one_loss=L(YOLOLossPipeline)(
            assigner=L(TaskAlignedAssigner)(topk=7, alpha=0.5, beta=6.0, iou_mode="ciou", resolve="all_gts",
                                            center_min_side=16.0, keep_zero_metric=True, topk2=1),
            loss_cls=L(BCEWithLogitsLoss)(),
            loss_box=L(IoULoss)(mode="ciou"),
            loss_reg=L(ImageL1Loss)(),
            cls_target="auto",  # the rule's score_target (TAL here), one-hot for a box-only rule swapped in
            box_weight="cls_target",
            loss_weights=dict(cls=0.5, box=7.5, reg=1.5),
        ),
        branch_weights=L(ProgressiveWeights)(start=0.8, end=0.1),
        score_thr=0.001,
        max_per_img=300,
    ),
)
