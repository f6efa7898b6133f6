"""Put last in a shapes config's ``_base_``: that config (its network, loss and schedule) on ``shapes_tiny.py``'s
8 + 8 generated 128 px images, 2 epochs, CPU, every epoch evaluated and checkpointed: for the tools' tests.
Plain dicts merged into the config's own data pipeline, head and schedule (not a config on its own)."""

from detkit.config import L
from detkit.data import LetterBox, Mosaic, RandomFlip

_shapes = dict(root="data/shapes_tiny", num_train=8, num_val=8, size=128, seed=0)
model = dict(head=dict(bias_init_size=128))
data = dict(
    train=dict(dataset=dict(split="train", **_shapes, cache_size=16,
                            pipeline=[L(Mosaic)(size=128), L(RandomFlip)(), L(LetterBox)(size=128)]),
               batch_size=4, num_workers=0),
    val=dict(dataset=dict(split="val", **_shapes, pipeline=[L(LetterBox)(size=128)]), batch_size=8, num_workers=0),
    img_size=128,
)
train = dict(epochs=2, nominal_batch=4, eval_interval=1, checkpoint=dict(keep_last=10, interval_iters=1),
             log_interval=1, amp=False)
schedule = dict(lr=dict(warmup_iters=2), no_mosaic_last_epochs=1)
runtime = dict(device="cpu", loggers=[], progress=False, plot_interval=0)
