"""A few-minute schedule for the synthetic shapes set on CPU: 30 epochs, short warm-up, cosine."""

train = dict(
    epochs=30,
    nominal_batch=16,
    optimizer=dict(type="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True),
    warmup_iters=50,
    warmup_ratio=0.01,
    warmup_bias_lr=None,
    warmup_momentum=0.8,
    lr_schedule="cosine",
    loss_scale="batch",  # YOLOv5 convention: loss x batch size, so lr 0.01 means what it does there
    min_lr_ratio=0.05,
    ema=dict(enabled=True, decay=0.999, tau=200),
    no_mosaic_last_epochs=5,
    eval_interval=5,
)
