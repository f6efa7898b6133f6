"""RTMDet-s: CSPNeXt (channel attention) -> CSPNeXtPAFPN -> RTMDet's head with convs shared across levels
and a BatchNorm per level, and RTMDet's loss (80 classes).

8,886,924 parameters, mmdet 3.3's ``rtmdet_s_8xb32-300e_coco.py`` model parameter for parameter
(backbone 4,378,320, neck 3,883,200, head 625,404): ``CSPNeXt(arch="P5", deepen_factor=0.33,
widen_factor=0.5, expand_ratio=0.5, channel_attention=True)``, ``CSPNeXtPAFPN(in_channels=[128, 256, 512],
out_channels=128, num_csp_blocks=1)``, ``RTMDetSepBNHead(in_channels=128, feat_channels=128, stacked_convs=2,
share_conv=True, exp_on_reg=False, pred_kernel_size=1)``; SiLU; BatchNorm eps 1e-5 / momentum 0.1 (the
config's ``SyncBN`` defaults). Loss as ``../heads/rtmdet.py`` (``DynamicSoftLabelAssigner(topk=13,
iou_weight=3.0, soft_center_radius=3.0)``, quality focal loss beta 2 on the assigner's IoU over every prior,
GIoU weighted by it, weights 1 and 2, both divided by the sum of the IoU targets), written out here because
the head's class differs from that file's. Measured against ``RTMDetHead.loss_by_feat``:
``benchmarks/parity_losses_rtmdet.py``.

The point priors sit at cell corners (``i * stride``), RTMDet's own ``MlvlPointGenerator(offset=0)``
(``PointGenerator(offset=0.0)``; detkit's other heads and the shapes configs keep cell centres, 0.5).
Difference from mmdet kept on purpose: detkit's images enter the network as RGB in 0..1, mmdet's as BGR
minus its mean over its std (a pretrained mmdet checkpoint would need that input).
"""

from detkit.anchors import PointGenerator
from detkit.assigners import DynamicSoftLabelAssigner
from detkit.coders import DistanceCoder
from detkit.config import L
from detkit.losses import IoULoss, QualityFocalLoss
from detkit.models import Detector, YOLOLossPipeline
from detkit.models.backbones.cspnext import CSPNeXt
from detkit.models.heads.rtmdet_head import RTMDetSepBNHead
from detkit.models.necks.cspnext_pafpn import CSPNeXtPAFPN

model = L(Detector)(
    backbone=L(CSPNeXt)(scale="s", out_indices=(3, 4, 5)),
    neck=L(CSPNeXtPAFPN)(out_channels=128, num_csp_blocks=1),
    head=L(RTMDetSepBNHead)(
        num_classes=80,
        share_convs=True,
        cls_channels=128,
        box_channels=128,
        num_convs=2,
        act="silu",
        bias_init="prior_prob",
        prior_prob=0.01,
        prior_generator=L(PointGenerator)(strides=[8, 16, 32], offset=0.0),  # RTMDet's corner points
        coder=L(DistanceCoder)(normalize=True),
        loss=L(YOLOLossPipeline)(
            assigner=L(DynamicSoftLabelAssigner)(topk=13, iou_weight=3.0, soft_center_radius=3.0),
            loss_cls=L(QualityFocalLoss)(beta=2.0),
            loss_box=L(IoULoss)(mode="giou"),
            cls_target="auto",
            box_weight="cls_target",
            loss_weights=dict(cls=1.0, box=2.0),
        ),
        score_thr=0.001,
        nms_iou_thr=0.65,
        nms_pre=30000,
        max_per_img=300,
    ),
)
