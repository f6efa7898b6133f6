"""ResNet-50 (ImageNet-style, stem and stage 2 frozen, BN in eval) -> FPN -> YOLO head."""

from detkit.config import L
from detkit.models import FPN, ResNet

_base_ = ["yolov4.py"]

model = dict(
    backbone=L(ResNet)(depth=50, out_indices=(3, 4, 5), frozen_stages=1, norm_eval=True),
    neck=L(FPN)(out_channels=256),
    head=dict(feat_channels=256),
)
