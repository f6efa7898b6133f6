"""Backbones: each reports ``out_channels`` and ``strides`` of the levels it returns."""

from detkit.models.backbones.cspdarknet import CSP_ARCHS, CSP_SCALES, CSPArch, CSPDarknet
from detkit.models.backbones.resnet import RESNET_DEPTHS, ResNet

__all__ = ["CSP_ARCHS", "CSP_SCALES", "CSPArch", "CSPDarknet", "RESNET_DEPTHS", "ResNet"]
