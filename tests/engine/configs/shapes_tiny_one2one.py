"""``shapes_tiny_decoupled.py`` with YOLOv10's one-to-one branches (``configs/common/heads/yolov10_one2one.py``):
a dual-branch head at toy widths, for the tools that name a branch's rule."""

_base_ = ["shapes_tiny_decoupled.py", "../../../configs/common/heads/yolov10_one2one.py"]
