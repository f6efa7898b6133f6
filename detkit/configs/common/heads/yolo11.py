"""YOLO11's head and loss as a config piece (80 classes): ``yolov8.py``'s head, loss and task-aligned
rule (``tal-ultralytics``) with YOLO11's class branch: each of its two convs is a depthwise 3x3 conv
then a 1x1 conv (``cls_branch="dwconv"``, Ultralytics' ``DWConv`` + ``Conv``); the box branch keeps
YOLOv8's two 3x3 convs and DFL (``reg_max=16``). Box prediction biases start at 2.0 as Ultralytics
8.4.190's ``Detect.bias_init`` sets them (``yolov8.py`` keeps YOLOv8's 1.0); BatchNorm eps 1e-3 /
momentum 0.03. A config lists it after the file giving the backbone and neck.
"""

_base_ = ["yolov8.py"]

model = dict(head=dict(cls_branch="dwconv", box_bias=2.0, norm_eps=1e-3, norm_momentum=0.03))
