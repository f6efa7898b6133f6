"""YOLOv4 at width 0.25 / depth 0.33 (CSPDarknet "tiny" scale) for CPU experiments."""

_base_ = ["yolov4.py"]

model = dict(backbone=dict(deepen_factor=0.33, widen_factor=0.25))
