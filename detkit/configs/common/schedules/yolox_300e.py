"""YOLOX's COCO schedule: 300 epochs, SGD (lr 0.01 per 64 images, momentum 0.9, nesterov, weight decay
5e-4), 5 warm-up epochs from 0, cosine to 5% of the LR, strong augmentation off for the last 15 epochs
(when the L1 loss starts, ``reg_last_epochs``). YOLOX divides its losses by the number of positives
and does not scale them by the batch size (``loss_scale="mean"``)."""

import torch

from detkit.config import L
from detkit.engine.schedules import LRSchedule

train = dict(
    epochs=300,
    nominal_batch=64,
    optimizer=L(torch.optim.SGD)(lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True),
    loss_scale="mean",
    multi_scale=None,
)
schedule = dict(
    lr=L(LRSchedule)(policy="cosine", min_lr_ratio=0.05, warmup_epochs=5.0, min_warmup_iters=100, warmup_ratio=0.0,
                     warmup_bias_lr=None, warmup_momentum=None),
    no_mosaic_last_epochs=15,
)
