"""YOLOv4 at width 0.125 / depth 0.33 for export tests: 5 shape classes, 256 px, generated shapes val set."""

from detkit.anchors import YOLOAnchorGenerator
from detkit.config import L
from detkit.data import SHAPE_CLASSES, LetterBox, ShapesDataset

_base_ = ["../../../configs/common/models/yolov4_tiny_cpu.py"]

model = dict(
    backbone=dict(widen_factor=0.125),
    head=dict(
        num_classes=len(SHAPE_CLASSES),
        prior_generator=L(YOLOAnchorGenerator)(  # configs/shapes_atss.py's anchors
            base_sizes=[[(15, 15), (19, 25), (29, 21)], [(31, 41), (49, 35), (53, 73)],
                        [(81, 57), (101, 107), (170, 168)]],
            strides=[8, 16, 32]),
        max_per_img=100,
        nms_pre=1000,  # also exercises the NMS graph's nms_pre cut
    ),
)
data = dict(
    val=dict(dataset=L(ShapesDataset)(root="data/shapes_deploy", split="val", num_train=0, num_val=4, size=192,
                                      seed=0, pipeline=[L(LetterBox)(size=256)]),
             batch_size=4, num_workers=0),
    class_names=list(SHAPE_CLASSES),
    img_size=256,
)
