"""Detection losses as functions with ``weight``, ``reduction`` and ``avg_factor``, plus thin
``nn.Module`` wrappers for configs (``L(FocalLoss)(gamma=2.0)``).

Every function computes an element-wise loss, multiplies it by ``weight`` (broadcastable to the
element-wise loss) and reduces it:

* ``reduction="none"``: the weighted element-wise loss;
* ``"sum"``: its sum;
* ``"mean"``: its mean, or ``sum / avg_factor`` when ``avg_factor`` is given (the caller's one
  normaliser, e.g. the number of positives: normalisation happens once, outside the loss).

Classification losses take raw logits ``pred (..., C)`` and a float ``target`` of the same
shape (one-hot, or soft scores for varifocal / quality focal); ``label_smoothing=eps`` moves the
binary targets to ``eps / 2`` and ``1 - eps / 2`` (YOLOv5's smoothing for sigmoid outputs).
Regression losses take ``(..., 4)`` inputs; IoU-family losses take xyxy boxes and give one
value per box. Everything is computed in fp32 and is finite (with finite gradients) on
degenerate boxes.
"""

from detkit.losses.base import REDUCTIONS, reduce_loss
from detkit.losses.classification import (
    BCEWithLogitsLoss,
    FocalLoss,
    QualityFocalLoss,
    VarifocalLoss,
    bce_with_logits_loss,
    quality_focal_loss,
    sigmoid_focal_loss,
    varifocal_loss,
)
from detkit.losses.regression import (
    INPUT_SPACES,
    IOU_PENALTIES,
    DistributionFocalLoss,
    ImageL1Loss,
    IoULoss,
    L1Loss,
    SmoothL1Loss,
    distribution_focal_loss,
    iou_loss,
    l1_loss,
    smooth_l1_loss,
)

__all__ = [
    "INPUT_SPACES",
    "IOU_PENALTIES",
    "REDUCTIONS",
    "BCEWithLogitsLoss",
    "DistributionFocalLoss",
    "FocalLoss",
    "ImageL1Loss",
    "IoULoss",
    "L1Loss",
    "QualityFocalLoss",
    "SmoothL1Loss",
    "VarifocalLoss",
    "bce_with_logits_loss",
    "distribution_focal_loss",
    "iou_loss",
    "l1_loss",
    "quality_focal_loss",
    "reduce_loss",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
    "varifocal_loss",
]
