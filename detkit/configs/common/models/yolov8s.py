"""YOLOv8-s: CSPDarknet (C2f stages, SPPF) -> CSPPAN (C2f) -> YOLOv8's head and loss (``../heads/yolov8.py``).

Ultralytics' YOLOv8s as data: the backbone has exactly Ultralytics 8.4.190's 5,079,712 parameters
(layers 0-9), backbone + neck 9,019,552, and the whole detector 11,166,544 (Ultralytics: 11,166,560,
16 of them its fixed DFL projection, which detkit's ``DFLCoder`` holds as a constant). BatchNorm
eps 1e-3 / momentum 0.03 everywhere, as Ultralytics trains.
"""

from detkit.config import L
from detkit.models import CSPPAN, CSPDarknet

_base_ = ["../heads/yolov8.py"]

model = dict(
    backbone=L(CSPDarknet)(arch="yolov8", scale="s", out_indices=(3, 4, 5)),
    neck=L(CSPPAN)(layout="yolov8", num_blocks=1),
    head=dict(norm_eps=1e-3, norm_momentum=0.03),
)
