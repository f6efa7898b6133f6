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

At scale: every rule works on each GT's candidates, not on the ``N x M`` matrix. On grid priors
(``anchors.grid_priors``' layout) ``assign`` lists a GT's candidate priors by each level's grid
arithmetic (:mod:`detkit.assigners.candidates`; SimOTA and dynamic soft labels in
:mod:`detkit.assigners.dynamic_k_sparse`) and computes IoUs, costs and metrics for those pairs only;
``assign_dense`` is the same rule over every pair, which the tests compare with bit for bit, and
which ``assign`` uses for priors that are not grids.

Each takes ``max_gt_chunk`` to process GTs in chunks (bounded memory, bit-identical results):
``"auto"`` (the default) picks the chunk from a CUDA device's free memory, none on CPU.
"""

from detkit.assigners.atss import ATSSAssigner
from detkit.assigners.base import NOT_ASSIGNED, AssignResult, Assigner
from detkit.assigners.chunking import gt_chunk_for_memory
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
    "gt_chunk_for_memory",
]
