"""Label assigners: which prior learns which GT. Batched over images, swappable by config.

Every assigner has ``assign(priors, gt_boxes, gt_labels, gt_mask, *, num_level_priors=None,
prior_strides=None, pred_boxes=None, pred_scores=None) -> AssignResult`` (see ``base.py``):

* :class:`GridAssigner`: YOLOv3 / YOLOv4 best-anchor-in-cell (+ YOLOv4's extra anchors), ignore by IoU;
* :class:`MaxIoUAssigner`: each prior to its best-IoU GT by thresholds, plus low-quality matches;
* :class:`ATSSAssigner`: adaptive IoU threshold over the nearest priors of each level;
* :class:`SimOTAAssigner`: YOLOX's dynamic-k matching on predictions (prediction-aware);
* :class:`TaskAlignedAssigner`: TOOD / YOLOv8's score x IoU alignment (prediction-aware);
* :class:`YOLOv5Assigner`: YOLOv5's anchor shape ratio in the centre cell and its two nearest neighbours;
* :class:`FCOSAssigner`: FCOS's centre sampling and regression range per level;
* :class:`DynamicSoftLabelAssigner`: RTMDet's dynamic-k matching on a soft-label cost (prediction-aware).

``MinPositives(assigner, min_pos_per_gt=1)`` wraps any of them so every valid GT gets a positive
(presets: ``"<name>+minpos"``).

Short names for common settings, each peer's variant included, are in :mod:`detkit.assigners.presets`.

Every rule is written once, over a table of (GT, prior) candidate pairs (:mod:`detkit.assigners.candidates`):
on a :class:`detkit.anchors.PriorGrid` (what heads pass) each GT's candidates come from the levels' grid
arithmetic, on a bare ``Tensor[N, 4]`` of priors the table is all pairs (the reference: same result bit for
bit). Memory is bounded one way: tables are processed in chunks of whole GTs of at most a pair budget
(``candidates.PAIR_BUDGET``). A custom rule only needs ``assign`` (:class:`Assigner`);
``detkit.testing.check_assigner`` runs the contract on it.
"""

from detkit.assigners.atss import ATSSAssigner
from detkit.assigners.base import NOT_ASSIGNED, Assigner, AssignResult
from detkit.assigners.dynamic_soft_label import DynamicSoftLabelAssigner
from detkit.assigners.fcos import FCOSAssigner
from detkit.assigners.grid import GridAssigner
from detkit.assigners.max_iou import MaxIoUAssigner
from detkit.assigners.min_pos import MinPosAssignResult, MinPositives
from detkit.assigners.simota import SimOTAAssigner
from detkit.assigners.task_aligned import TaskAlignedAssigner
from detkit.assigners.yolov5 import YOLOv5Assigner

__all__ = [
    "NOT_ASSIGNED",
    "ATSSAssigner",
    "AssignResult",
    "Assigner",
    "DynamicSoftLabelAssigner",
    "FCOSAssigner",
    "GridAssigner",
    "MaxIoUAssigner",
    "MinPosAssignResult",
    "MinPositives",
    "SimOTAAssigner",
    "TaskAlignedAssigner",
    "YOLOv5Assigner",
]
