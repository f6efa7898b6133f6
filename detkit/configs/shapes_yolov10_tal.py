"""``shapes_yolov8_tal.py`` with YOLOv10's consistent dual assignment (``common/heads/yolov10_one2one.py``):
one-to-one branches (the same layout, on detached features) trained beside the one-to-many ones by
the same task-aligned rule at ``topk=1`` with the same metric. Inference reads the one-to-one branch
without NMS by default.

    python tools/train.py configs/shapes_yolov10_tal.py
    python tools/test.py configs/shapes_yolov10_tal.py work_dirs/shapes_yolov10_tal/best.pth       # one-to-one, no NMS
    python tools/test.py configs/shapes_yolov10_tal.py work_dirs/shapes_yolov10_tal/best.pth \\
        --cfg-options model.head.branch=one2many model.head.nms=True                                 # one-to-many + NMS
"""

_base_ = ["shapes_yolov8_tal.py", "common/heads/yolov10_one2one.py"]
