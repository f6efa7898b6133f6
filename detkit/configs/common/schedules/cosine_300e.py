"""YOLOv4/v5-style schedule: 300 epochs, SGD nesterov, 3 warm-up epochs, cosine to 5% LR.

Keys of the ``train`` section (the engine reads them through detkit.engine.settings.TrainSettings):
    epochs, nominal_batch (gradients accumulate up to this total batch; weight decay scales with it),
    optimizer=dict(type="sgd"|"adamw", lr, momentum, weight_decay, nesterov),
    warmup_epochs / warmup_iters (iterations win), min_warmup_iters, warmup_ratio (start LR factor),
    warmup_bias_lr (YOLOv5: the bias group starts at this LR), warmup_momentum,
    lr_schedule="cosine"|"step"|"linear", min_lr_ratio, steps (epochs, for "step"), gamma,
    no_mosaic_last_epochs (Mosaic/MixUp off for the last N epochs), multi_scale=(min, max) or None,
    assigner_schedule=[(epoch, L(Assigner)(...)), ...] (swap model.head.loss.assigner from an epoch on).
"""

train = dict(
    epochs=300,
    nominal_batch=64,
    optimizer=dict(type="sgd", lr=0.01, momentum=0.937, weight_decay=5e-4, nesterov=True),
    warmup_epochs=3.0,
    min_warmup_iters=100,
    warmup_ratio=0.0,
    warmup_bias_lr=0.1,
    warmup_momentum=0.8,
    lr_schedule="cosine",
    loss_scale="batch",  # YOLOv5 convention: loss x batch size, so lr 0.01 means what it does there
    min_lr_ratio=0.05,
    no_mosaic_last_epochs=15,
    multi_scale=None,
)
