"""A tiny config on the engine's stand-ins: 8 images of 64 px, a 2-conv detector, CPU."""

import torch

from detkit.config import L
from detkit.engine.schedules import LRSchedule
from tests.engine.standins import TinyDataset, TinyDetector, tiny_collate

model = L(TinyDetector)(num_classes=2, width=8)
data = dict(
    train=dict(dataset=L(TinyDataset)(n=8, size=64), batch_size=2, num_workers=0),
    val=dict(dataset=L(TinyDataset)(n=8, size=64), batch_size=4, num_workers=0),
    collate=tiny_collate,
)
train = dict(
    epochs=2, nominal_batch=4,
    optimizer=L(torch.optim.SGD)(lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True),
    ema=dict(enabled=True, decay=0.99, tau=4),
    amp=True, grad_clip=10.0, multi_scale=(32, 96), multi_scale_interval=2,
    eval_interval=1, checkpoint=dict(keep_last=10, interval_iters=2), log_interval=1, seed=3,
)
schedule = dict(
    lr=L(LRSchedule)(policy="cosine", min_lr_ratio=0.1, warmup_iters=3, warmup_ratio=0.1, warmup_bias_lr=0.1,
                     warmup_momentum=0.8),
    no_mosaic_last_epochs=1,
)
runtime = dict(device="cpu", loggers=[], progress=False, plot_interval=0)
