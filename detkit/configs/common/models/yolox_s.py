"""YOLOX-s: CSPDarknet (Focus stem, SPP in the last stage) -> PAFPN (C3) -> YOLOX's head and loss
(``../heads/yolox.py``).

8,968,255 parameters (YOLOX-s: 8.97M): backbone and neck equal yolox 0.3.0's ``YOLOPAFPN``, the head
is YOLOX's (per level a 1x1 stem to 128 channels, two 3x3 convs per branch, class / box / objectness
1x1 convs). BatchNorm eps 1e-3 / momentum 0.03 everywhere, as YOLOX trains.
"""

from detkit.config import L
from detkit.models import CSPPAN, CSPDarknet

_base_ = ["../heads/yolox.py"]

model = dict(
    backbone=L(CSPDarknet)(arch="yolox", scale="s", out_indices=(3, 4, 5)),
    neck=L(CSPPAN)(layout="yolox", num_blocks=1),
    head=dict(norm_eps=1e-3, norm_momentum=0.03),
)
