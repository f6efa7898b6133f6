"""YOLOX-s on COCO 2017 with SimOTA, as YOLOX trains it.

CSPDarknet (Focus stem, SPP) - PAFPN - decoupled head with objectness (``common/models/yolox_s.py``),
SimOTA, IoU-aware classification target, ``1 - IoU**2`` box loss and, in the last 15 epochs, L1 on the
raw box outputs; mosaic + mixup + affine (rotation 10 degrees, shear 2, scale 0.1-2) + HSV + flip at
640; SGD with 5 warm-up epochs and cosine decay over 300 epochs (``common/schedules/yolox_300e.py``), EMA.
Differences from YOLOX's own code: detkit's MixUp is YOLOv5's blend (YOLOX also jitters the second
image's scale), and the last 15 epochs switch mosaic and mixup off as detkit's trainer does.

    python tools/train.py configs/yolox_s_simota.py
"""

from detkit.config import L
from detkit.data import MixUp, Mosaic, RandomAffine, RandomFlip, RandomHSV

_base_ = [
    "common/models/yolox_s.py",
    "common/data/coco.py",
    "common/schedules/yolox_300e.py",
    "common/runtime.py",
]

data = dict(train=dict(dataset=dict(pipeline=[
    L(Mosaic)(size=640, p=1.0),
    L(RandomAffine)(size=640, degrees=10.0, translate=0.1, scale=(0.1, 2.0), shear=2.0),
    L(MixUp)(p=1.0),
    L(RandomHSV)(h=0.015, s=0.7, v=0.4),
    L(RandomFlip)(p=0.5),
])))
