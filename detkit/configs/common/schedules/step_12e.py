"""The "1x" schedule of mmdetection: 12 epochs, SGD, 500 linear warm-up iterations, LR x0.1 at 8 and 11."""

import torch

from detkit.config import L
from detkit.engine.schedules import LRSchedule

train = dict(
    epochs=12,
    nominal_batch=16,
    optimizer=L(torch.optim.SGD)(lr=0.01, momentum=0.9, weight_decay=1e-4, nesterov=False),
    ema=dict(enabled=False),
)
schedule = dict(
    lr=L(LRSchedule)(policy="step", steps=(8, 11), gamma=0.1, warmup_iters=500, warmup_ratio=0.001),
    no_mosaic_last_epochs=0,
)
