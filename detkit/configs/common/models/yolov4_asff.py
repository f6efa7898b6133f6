"""YOLOv4 with ASFF fusion after its SPP + PANet neck."""

from detkit.config import L
from detkit.models import ASFF, PAN

_base_ = ["yolov4.py"]

model = dict(neck=L(ASFF)(base=L(PAN)(spp=True), compress_channels=16))
