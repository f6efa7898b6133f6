"""The real parts at toy scale: YOLOv4 (width 0.125) on 16 + 8 generated 128 px shapes images, CPU."""

from detkit.config import L
from detkit.data import SHAPE_CLASSES, LetterBox, Mosaic, RandomFlip, ShapesDataset

_base_ = [
    "../../../configs/common/models/yolov4_tiny_cpu.py",
    "../../../configs/common/runtime.py",
    "../../../configs/common/schedules/shapes_short.py",
]

_shapes = dict(root="data/shapes_tiny", num_train=8, num_val=8, size=128, seed=0)
model = dict(backbone=dict(widen_factor=0.125), head=dict(num_classes=len(SHAPE_CLASSES)))
data = dict(
    train=dict(dataset=L(ShapesDataset)(split="train", **_shapes,
                                        pipeline=[L(Mosaic)(size=128), L(RandomFlip)(), L(LetterBox)(size=128)]),
               batch_size=4, num_workers=0),
    val=dict(dataset=L(ShapesDataset)(split="val", **_shapes, pipeline=[L(LetterBox)(size=128)]),
             batch_size=8, num_workers=0),
    class_names=list(SHAPE_CLASSES),
    img_size=128,
)
train = dict(epochs=2, nominal_batch=4, eval_interval=1, checkpoint=dict(keep_last=10, interval_iters=1),
             log_interval=1, amp=False)
schedule = dict(lr=dict(warmup_iters=2), no_mosaic_last_epochs=1)
runtime = dict(device="cpu", loggers=[], progress=False, plot_interval=0)
