"""Models: backbones, necks, heads, the detector and post-processing."""

from detkit.models.backbones import CSPDarknet, ResNet
from detkit.models.darknet import darknet_convs, load_darknet_weights, save_darknet_weights
from detkit.models.detector import Detector
from detkit.models.heads import DecoupledHead, YOLOHead, YOLOLossPipeline
from detkit.models.necks import ASFF, CSPPAN, FPN, PAN
from detkit.models.postprocess import postprocess, undo_letterbox

__all__ = [
    "ASFF",
    "CSPDarknet",
    "CSPPAN",
    "DecoupledHead",
    "Detector",
    "FPN",
    "PAN",
    "ResNet",
    "YOLOHead",
    "YOLOLossPipeline",
    "darknet_convs",
    "load_darknet_weights",
    "postprocess",
    "save_darknet_weights",
    "undo_letterbox",
]
