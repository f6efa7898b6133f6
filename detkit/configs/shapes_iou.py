"""``shapes_atss.py`` with max-IoU assignment (pos >= 0.5, neg < 0.4, low-quality matches)."""

from detkit.assigners import MaxIoUAssigner
from detkit.config import L

_base_ = ["shapes_atss.py"]

model = dict(head=dict(loss=dict(assigner=L(MaxIoUAssigner)(pos_iou_thr=0.5, neg_iou_thr=0.4))))
