"""``shapes_tiny.py`` with YOLOX's head and loss (``configs/common/heads/yolox.py``: objectness, YOLOX box
coding, SimOTA, L1 in the last epoch) at toy widths."""

from detkit.data import SHAPE_CLASSES

_base_ = ["shapes_tiny.py", "../../../configs/common/heads/yolox.py"]

model = dict(head=dict(num_classes=len(SHAPE_CLASSES), stem_channels=16, loss=dict(reg_last_epochs=1)))
