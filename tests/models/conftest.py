"""Small model builders shared by the model tests."""

import pytest

from detkit.anchors import YOLOAnchorGenerator
from detkit.coders import YOLOCoder
from detkit.models import PAN, CSPDarknet, Detector, YOLOHead

LEVEL_ANCHORS = [[(8, 8), (16, 12), (24, 24)], [(16, 16), (32, 24), (48, 48)],
                 [(64, 64), (96, 80), (128, 128)]]


def tiny_head(num_classes: int = 3, **kwargs) -> YOLOHead:
    return YOLOHead(
        num_classes,
        prior_generator=YOLOAnchorGenerator(base_sizes=LEVEL_ANCHORS, strides=[8, 16, 32]),
        coder=YOLOCoder(),
        **kwargs,
    )


def tiny_detector(num_classes: int = 3, deepen_factor: float = 0.33, **kwargs) -> Detector:
    backbone = CSPDarknet(deepen_factor=deepen_factor, widen_factor=0.125)
    return Detector(backbone, PAN(), tiny_head(num_classes, **kwargs))


@pytest.fixture
def detector():
    return tiny_detector()
