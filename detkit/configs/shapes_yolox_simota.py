"""The demo's network (``shapes_atss.py``: YOLOv5-layout CSPDarknet at depth 0.33 / width 0.125, PAN with
SPP) with YOLOX's head and loss (``common/heads/yolox.py``) instead of the anchor head: decoupled head
with objectness and YOLOX's box coding, SimOTA, IoU-aware classification target, ``1 - IoU**2`` box
loss, losses divided by the number of positives, L1 in the last 3 epochs (the epochs without mosaic).
Only the head and its loss differ from ``shapes_atss.py`` (stem width 32, its NMS settings).

    python tools/train.py configs/shapes_yolox_simota.py
"""

from detkit.data import SHAPE_CLASSES

_base_ = ["shapes_atss.py", "common/heads/yolox.py"]

model = dict(head=dict(num_classes=len(SHAPE_CLASSES), stem_channels=32, multi_label=True,
                       loss=dict(reg_last_epochs=3)))
