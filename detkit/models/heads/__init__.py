"""Dense detection heads (coupled YOLO, anchor-free decoupled) and their one loss pipeline."""

from detkit.models.heads.decoupled_head import DecoupledHead
from detkit.models.heads.dense_head import DenseHead
from detkit.models.heads.predictions import DensePredictions
from detkit.models.heads.yolo_head import YOLOHead
from detkit.models.heads.yolo_loss import YOLOLossPipeline

__all__ = ["DecoupledHead", "DenseHead", "DensePredictions", "YOLOHead", "YOLOLossPipeline"]
