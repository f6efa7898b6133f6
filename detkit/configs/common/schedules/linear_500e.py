"""YOLOv8's COCO schedule: 500 epochs, SGD (lr 0.01, momentum 0.937, nesterov), 3 warm-up epochs
(bias LR from 0.1, momentum from 0.8), linear decay to 1% of the LR, mosaic off for the last 10 epochs,
the loss times the batch size (Ultralytics' convention).

As Ultralytics 8.4's loop: the decay moves once per epoch, the warm-up aims at the epoch's factor, lasts
at most ``epochs - 1`` epochs (no 100-iteration floor) and ramps gradient accumulation from 1 to the
nominal batch's (``benchmarks/parity_train_loop_ultralytics.py``)."""

import torch

from detkit.config import L
from detkit.engine.schedules import LRSchedule

train = dict(
    epochs=500,
    nominal_batch=64,
    optimizer=L(torch.optim.SGD)(lr=0.01, momentum=0.937, weight_decay=5e-4, nesterov=True),
    loss_scale="batch",
    multi_scale=None,
)
schedule = dict(
    lr=L(LRSchedule)(policy="linear", min_lr_ratio=0.01, warmup_epochs=3.0, min_warmup_iters=0, warmup_ratio=0.0,
                     warmup_bias_lr=0.1, warmup_momentum=0.8, decay_unit="epoch", warmup_spare_last_epoch=True,
                     warmup_accumulate=True),
    no_mosaic_last_epochs=10,
)
