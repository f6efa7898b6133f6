"""RTMDet-s on COCO 2017 with dynamic soft label assignment, as mmdet 3.3 trains it where detkit can.

Model and loss: ``common/models/rtmdet_s.py`` (mmdet's ``rtmdet_s_8xb32-300e_coco.py`` parameter for
parameter, 8,886,924 parameters; loss terms and gradients against ``RTMDetHead.loss_by_feat``:
``benchmarks/parity_losses_rtmdet.py``). Training: AdamW lr 0.004 at a batch of 256, weight decay 0.05,
1000 warm-up iterations from 1e-5 of the LR, 300 epochs down to 5% of the LR, EMA, mosaic + mixup + affine
(scale 0.5-2) + HSV + flip at 640, mosaic and mixup off for the last 20 epochs; the loss is the batch mean
(mmdet does not scale it by the batch size).
Differences from mmdet's recipe: its LR stays flat for 150 epochs before the cosine (here cosine from the
warm-up on), its EMA is ``ExpMomentumEMA(momentum=0.0002)`` (here the runtime's EMA), its mosaic / mixup
are cached versions with a random resize and crop, and its norm and bias parameters get no weight decay
(``paramwise_cfg``). The priors sit at cell corners as RTMDet's do (see the model file).

    python tools/train.py configs/rtmdet_s_dsl.py
"""

import torch

from detkit.config import L
from detkit.data import MixUp, Mosaic, RandomAffine, RandomFlip, RandomHSV
from detkit.engine.schedules import LRSchedule

_base_ = [
    "common/models/rtmdet_s.py",
    "common/data/coco.py",
    "common/runtime.py",
]

train = dict(
    epochs=300,
    nominal_batch=256,
    optimizer=L(torch.optim.AdamW)(lr=0.004, betas=(0.9, 0.999), weight_decay=0.05),
    loss_scale="mean",
    multi_scale=None,
    grad_clip=None,  # mmdet's RTMDet optimizer wrapper does not clip
)
schedule = dict(
    lr=L(LRSchedule)(policy="cosine", min_lr_ratio=0.05, warmup_iters=1000, warmup_ratio=1e-5),
    no_mosaic_last_epochs=20,
)
data = dict(train=dict(dataset=dict(pipeline=[
    L(Mosaic)(size=640, p=1.0),
    L(RandomAffine)(size=640, degrees=0.0, translate=0.1, scale=(0.5, 2.0), shear=0.0),
    L(MixUp)(p=1.0),
    L(RandomHSV)(h=0.015, s=0.7, v=0.4),
    L(RandomFlip)(p=0.5),
])))
