"""Detection heads."""

from detkit.models.heads.yolo_head import YOLOHead

__all__ = ["YOLOHead"]
