"""Backbones: each reports ``out_channels`` and ``strides`` of the levels it returns."""

from detkit.models.backbones.cspdarknet import (
    CSP_ARCHS,
    CSP_SCALES,
    YOLO11_SCALES,
    YOLO26_SCALES,
    YOLOV8_SCALES,
    YOLOX_SCALES,
    CSPArch,
    CSPDarknet,
    CSPScale,
)
from detkit.models.backbones.resnet import RESNET_DEPTHS, ResNet

__all__ = [
    "CSP_ARCHS", "CSP_SCALES", "YOLO11_SCALES", "YOLO26_SCALES", "YOLOV8_SCALES", "YOLOX_SCALES", "CSPArch",
    "CSPDarknet", "CSPScale",
    "RESNET_DEPTHS", "ResNet",
]
