"""``shapes_atss.py`` with YOLOv4's grid rule (best anchor in the centre cell + anchors with shape IoU > 0.213)."""

from detkit.assigners import GridAssigner
from detkit.config import L

_base_ = ["shapes_atss.py"]

model = dict(head=dict(loss=dict(assigner=L(GridAssigner)(extra_match_thr=0.213, ignore_iou_thr=0.7))))
