"""YOLOv4/v5-style schedule: 300 epochs, SGD nesterov, 3 warm-up epochs, cosine to 5% LR.

``train`` is the loop (the engine reads it through detkit.engine.settings.TrainSettings):
    epochs, nominal_batch (gradients accumulate up to this total batch; weight decay scales with it),
    optimizer=L(torch.optim.SGD | torch.optim.AdamW | ...)(lr, momentum, weight_decay, ...),
    loss_scale, multi_scale=(min, max) or None.
``schedule`` is what changes over the run (detkit.engine.settings.ScheduleSettings):
    lr=L(LRSchedule)(policy="cosine"|"step"|"linear", min_lr_ratio, steps (epochs, for "step"), gamma,
                     warmup_epochs / warmup_iters (iterations win), min_warmup_iters, warmup_ratio (start LR
                     factor), warmup_bias_lr (YOLOv5: the bias group starts at this LR), warmup_momentum),
    no_mosaic_last_epochs (Mosaic/MixUp off for the last N epochs),
    assigner_switches=[(epoch, L(Assigner)(...)), ...] (swap model.head.loss.assigner from an epoch on).
"""

import torch

from detkit.config import L
from detkit.engine.schedules import LRSchedule

train = dict(
    epochs=300,
    nominal_batch=64,
    optimizer=L(torch.optim.SGD)(lr=0.01, momentum=0.937, weight_decay=5e-4, nesterov=True),
    loss_scale="batch",  # YOLOv5 convention: loss x batch size, so lr 0.01 means what it does there
    multi_scale=None,
)
schedule = dict(
    lr=L(LRSchedule)(policy="cosine", min_lr_ratio=0.05, warmup_epochs=3.0, min_warmup_iters=100, warmup_ratio=0.0,
                     warmup_bias_lr=0.1, warmup_momentum=0.8),
    no_mosaic_last_epochs=15,
)
