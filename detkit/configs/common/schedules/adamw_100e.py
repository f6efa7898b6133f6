"""AdamW for 100 epochs (PP-YOLOE / RT-DETR-like): lr 1e-3, weight decay 0.05, cosine to 5%."""

import torch

from detkit.config import L
from detkit.engine.schedules import LRSchedule

train = dict(
    epochs=100,
    nominal_batch=64,
    optimizer=L(torch.optim.AdamW)(lr=0.001, betas=(0.9, 0.999), weight_decay=0.05),
)
schedule = dict(
    lr=L(LRSchedule)(policy="cosine", min_lr_ratio=0.05, warmup_epochs=3.0, min_warmup_iters=100, warmup_ratio=0.001),
    no_mosaic_last_epochs=10,
)
