"""AdamW for 100 epochs (PP-YOLOE / RT-DETR-like): lr 1e-3, weight decay 0.05, cosine to 5%."""

train = dict(
    epochs=100,
    nominal_batch=64,
    optimizer=dict(type="adamw", lr=0.001, momentum=0.9, weight_decay=0.05),
    warmup_epochs=3.0,
    min_warmup_iters=100,
    warmup_ratio=0.001,
    lr_schedule="cosine",
    min_lr_ratio=0.05,
    no_mosaic_last_epochs=10,
)
