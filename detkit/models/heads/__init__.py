"""Detection heads and their training-loss pipeline."""

from detkit.models.heads.yolo_head import YOLOHead
from detkit.models.heads.yolo_loss import YOLOLossPipeline

__all__ = ["YOLOHead", "YOLOLossPipeline"]
