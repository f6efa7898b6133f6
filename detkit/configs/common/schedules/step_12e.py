"""The "1x" schedule of mmdetection: 12 epochs, SGD, 500 linear warm-up iterations, LR x0.1 at 8 and 11."""

train = dict(
    epochs=12,
    nominal_batch=16,
    optimizer=dict(type="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, nesterov=False),
    warmup_iters=500,
    warmup_ratio=0.001,
    lr_schedule="step",
    steps=(8, 11),
    gamma=0.1,
    ema=dict(enabled=False),
    no_mosaic_last_epochs=0,
)
