"""YOLO11-n: CSPDarknet (``arch="yolo11"``: C3k2 stages, SPPF, C2PSA) -> CSPPAN (``layout="yolo11"``, C3k2)
-> YOLO11's head and loss (``../heads/yolo11.py``: YOLOv8's with the depthwise class branch).

Ultralytics' ``yolo11.yaml`` at the n scale as data, module by module in its layer order: the backbone
has exactly Ultralytics 8.4.190's 1,365,472 parameters (layers 0-10), backbone + neck 2,159,168, and the
whole detector 2,624,064 (Ultralytics: 2,624,080, 16 of them its fixed DFL projection, which detkit's
``DFLCoder`` holds as a constant). Other scales: ``CSPDarknet(scale=...)`` and the neck's ``num_blocks``
(2 at l, x) and ``c3k`` (True at m, l, x), as ``configs/yolo11{s,m,l,x}_tal.py`` set them.
"""

from detkit.config import L
from detkit.models import CSPPAN, CSPDarknet

_base_ = ["../heads/yolo11.py"]

model = dict(
    backbone=L(CSPDarknet)(arch="yolo11", scale="n", out_indices=(3, 4, 5)),
    neck=L(CSPPAN)(layout="yolo11", num_blocks=1, c3k=False),
)
