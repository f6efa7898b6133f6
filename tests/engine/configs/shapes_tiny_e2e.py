"""``shapes_tiny_decoupled.py`` with YOLO26's end-to-end head and losses (``configs/common/heads/yolo26.py``:
DFL-free boxes, one-to-one branches trained by the top-7-then-top-1 rule, progressive branch weights) at toy
widths."""

from detkit.data import SHAPE_CLASSES

_base_ = ["shapes_tiny_decoupled.py", "../../../configs/common/heads/yolo26.py"]

model = dict(head=dict(num_classes=len(SHAPE_CLASSES)))
