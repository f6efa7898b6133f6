"""``shapes_tiny.py`` with YOLOv8's head and loss (``configs/common/heads/yolov8.py``: DFL boxes,
task-aligned assignment, no objectness) at toy widths."""

from detkit.data import SHAPE_CLASSES

_base_ = ["shapes_tiny.py", "../../../configs/common/heads/yolov8.py"]

model = dict(head=dict(num_classes=len(SHAPE_CLASSES), coder=dict(reg_max=8), cls_channels=16, box_channels=16,
                       bias_init_size=128))
