"""Deployment: letterbox pre-processing, ONNX export with metadata, ONNX Runtime and OpenVINO inference.

    from detkit.deploy import load_predictor
    predictor = load_predictor("work_dirs/shapes_atss/best.onnx")   # or (checkpoint, config=...)
    dets = predictor([cv2.imread("image.jpg")])                      # original-image pixels

``export_onnx`` and ``OnnxDetector`` import ``onnx`` / ``onnxruntime`` only when called;
``export_openvino`` and ``OpenVinoDetector`` import ``openvino`` (and ``nncf`` for int8) likewise.
"""

from detkit.deploy.graph_nms import NonMaxSuppression, padded_nms
from detkit.deploy.metadata import DeployMetadata
from detkit.deploy.onnx_export import DEFAULT_OPSET, DecodedOutputs, DecodedWithNMS, build_metadata, export_onnx
from detkit.deploy.onnx_runtime import OnnxDetector
from detkit.deploy.openvino_runtime import OpenVinoDetector, export_openvino
from detkit.deploy.predictor import Predictor, load_predictor, resolve_backend
from detkit.deploy.preprocess import LetterboxSettings, letterbox_from_config, letterbox_images
from detkit.deploy.runtimes import open_exported

__all__ = [
    "DEFAULT_OPSET",
    "DecodedOutputs",
    "DecodedWithNMS",
    "DeployMetadata",
    "LetterboxSettings",
    "NonMaxSuppression",
    "OnnxDetector",
    "OpenVinoDetector",
    "Predictor",
    "build_metadata",
    "export_onnx",
    "export_openvino",
    "letterbox_from_config",
    "letterbox_images",
    "load_predictor",
    "open_exported",
    "padded_nms",
    "resolve_backend",
]
