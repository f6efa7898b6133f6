"""YOLO26's layout (``configs/common/models/yolo26.py``: C3k2 / SPPF with shortcut / C2PSA, the P5 block with
attention, the end-to-end head read NMS-free) at width 0.0625 / depth 0.33 for export tests: 5 shape classes,
256 px."""

from detkit.config import L
from detkit.data import SHAPE_CLASSES, LetterBox, ShapesDataset

_base_ = ["../../../configs/common/models/yolo26.py"]

model = dict(
    backbone=dict(scale=None, widen_factor=0.0625, deepen_factor=0.33, max_channels=1024),
    head=dict(num_classes=len(SHAPE_CLASSES), max_per_img=100, bias_init_size=256),
)
data = dict(
    val=dict(dataset=L(ShapesDataset)(root="data/shapes_deploy", split="val", num_train=0, num_val=4, size=192,
                                      seed=0, pipeline=[L(LetterBox)(size=256)]),
             batch_size=4, num_workers=0),
    class_names=list(SHAPE_CLASSES),
    img_size=256,
)
