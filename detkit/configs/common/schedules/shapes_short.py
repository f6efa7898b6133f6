"""A few-minute schedule for the synthetic shapes set on CPU: 30 epochs, short warm-up, cosine."""

import torch

from detkit.config import L
from detkit.engine.schedules import LRSchedule

train = dict(
    epochs=30,
    nominal_batch=16,
    optimizer=L(torch.optim.SGD)(lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True),
    loss_scale="batch",  # YOLOv5 convention: loss x batch size, so lr 0.01 means what it does there
    ema=dict(enabled=True, decay=0.999, tau=200),
    eval_interval=5,
)
schedule = dict(
    lr=L(LRSchedule)(policy="cosine", min_lr_ratio=0.05, warmup_iters=50, warmup_ratio=0.01, warmup_bias_lr=None,
                     warmup_momentum=0.8),
    no_mosaic_last_epochs=5,
)
