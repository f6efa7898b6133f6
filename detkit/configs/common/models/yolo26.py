"""YOLO26-n: CSPDarknet (``arch="yolo26"``: C3k2 stages, YOLO26's SPPF, C2PSA) -> CSPPAN (``layout="yolo26"``:
C3k2 blocks with C3k inner blocks, the top bottom-up block with attention) -> YOLO26's end-to-end head and
losses (``../heads/yolo26.py``).

Ultralytics' ``yolo26.yaml`` at the n scale as data, module by module in its layer order: the backbone has
exactly Ultralytics 8.4.190's 1,365,472 parameters (layers 0-10), backbone + neck 2,262,624, and the whole
detector 2,572,280, Ultralytics' count (``reg_max=1``: no DFL projection; the one-to-one copies of the box and
class branches included). Other scales: ``CSPDarknet(scale=...)`` and the neck's ``num_blocks`` (2 at l, x),
as ``configs/yolo26{s,m,l,x}.py`` set them.
"""

from detkit.config import L
from detkit.models import CSPPAN, CSPDarknet

_base_ = ["../heads/yolo26.py"]

model = dict(
    backbone=L(CSPDarknet)(arch="yolo26", scale="n", out_indices=(3, 4, 5)),
    neck=L(CSPPAN)(layout="yolo26", num_blocks=1),
)
