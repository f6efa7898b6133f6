"""Export a detkit detector to ONNX: decoded boxes and scores, optionally NMS, with metadata.

Uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): it needs no extra
package (the dynamo exporter needs ``onnxscript``), traces this fixed-size graph reliably, and
writes :class:`~detkit.deploy.graph_nms.NonMaxSuppression` as the standard ONNX op. Priors are
constants of the graph, so the input height and width are fixed (stored in the metadata); the
batch dimension can be left free (``dynamic_batch``).

Graphs (``images (B, 3, H, W)`` float32 RGB 0..1, letterboxed as the metadata says):

* :class:`DecodedOutputs` -> ``boxes (B, 4, N)`` xyxy input pixels, ``scores (B, C, N)``, channel-first
  (the metadata's ``channels_first``; ``(B, N, 4)``, ``(B, N, C)`` without it): the head's maps are
  flattened and decoded with their channels on dim 1, so the graph has no transposes (YOLOv8n at
  640, OpenVINO int8: about 1 ms of 20 per image), and the runtimes read the outputs through
  transposed views;
* :class:`DecodedWithNMS` -> ``num_dets (B,)``, ``det_boxes (B, D, 4)``, ``det_scores (B, D)``,
  ``det_labels (B, D)`` (see :func:`~detkit.deploy.graph_nms.padded_nms`).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import detkit
from detkit.deploy.graph_nms import padded_nms
from detkit.deploy.metadata import INPUT_NAME, DeployMetadata
from detkit.deploy.preprocess import LetterboxSettings
from detkit.io import atomic_write_bytes

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "DecodedOutputs", "DecodedWithNMS", "build_metadata", "export_module",
           "export_onnx"]

# Opset 17 (ONNX 1.12, 2022) is run by every maintained runtime; 10+ has NonMaxSuppression.
DEFAULT_OPSET = 17
MIN_OPSET = 17


class DecodedOutputs(nn.Module):
    """``images (B, 3, H, W) -> boxes (B, N, 4), scores (B, N, C)`` (:meth:`Detector.forward_decoded`);
    ``(B, 4, N)``, ``(B, C, N)`` with ``channels_first``."""

    def __init__(self, detector: nn.Module, channels_first: bool = False) -> None:
        super().__init__()
        self.channels_first = bool(channels_first)
        if not callable(getattr(detector, "forward_decoded", None)):
            raise ValueError(
                f"{type(detector).__name__} has no forward_decoded(images) -> (boxes, scores); ONNX export "
                "supports detkit.models.Detector with a YOLOHead"
            )
        self.detector: Any = detector  # duck-typed: forward_decoded

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.detector.forward_decoded(images, channels_first=self.channels_first)


class DecodedWithNMS(nn.Module):
    """:class:`DecodedOutputs` followed by :func:`padded_nms` with fixed settings.

    Args:
        detector: a detkit ``Detector``.
        postprocess: ``score_thr``, ``nms_iou_thr``, ``nms_pre``, ``max_per_img``, ``multi_label``.
    """

    def __init__(self, detector: nn.Module, postprocess: dict[str, Any]) -> None:
        super().__init__()
        self.decoded = DecodedOutputs(detector)
        self.postprocess = dict(postprocess)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        boxes, scores = self.decoded(images)
        return padded_nms(boxes, scores, **self.postprocess)


def build_metadata(
    detector: nn.Module,
    letterbox: LetterboxSettings,
    class_names: Sequence[str] | None = None,
    *,
    with_nms: bool = False,
    dynamic_batch: bool = False,
    source: Mapping[str, str] | None = None,
    channels_first: bool | None = None,
) -> DeployMetadata:
    """Metadata of ``detector`` (a detkit ``Detector``): its strides and its head's post-processing
    settings (``head.test_cfg``), with class names (``"0"``, ``"1"``, ... when not given).

    Args:
        detector: the model to export.
        letterbox: how frames are fitted to the input (:func:`~detkit.deploy.letterbox_from_config`).
        class_names: names per class index.
        with_nms: the graph ends in ONNX ``NonMaxSuppression`` (padded outputs) instead of decoded
            boxes and scores.
        dynamic_batch: the batch dimension is symbolic (else 1).
        source: where the model came from (``{"checkpoint": ...}``), kept in the file beside detkit's and
            torch's versions.
        channels_first: decoded outputs ``(B, 4, N)`` / ``(B, C, N)`` (default: without NMS; a graph with
            NMS has no decoded outputs).

    Returns:
        The :class:`DeployMetadata` :func:`export_onnx` writes into the model.

    Raises:
        ValueError: not a detkit Detector with a dense head, a class-name count unlike the head's, or an
            input size that is not a multiple of the model's largest stride."""
    model: Any = detector  # duck-typed: head.num_classes / head.test_cfg, strides, size_divisor
    head = getattr(model, "head", None)
    test_cfg = getattr(head, "test_cfg", None)
    if head is None or test_cfg is None or not hasattr(model, "strides"):
        raise ValueError(f"{type(detector).__name__} is not a detkit Detector with a YOLOHead (needs strides and "
                         "head.test_cfg); ONNX export supports those")
    num_classes = int(head.num_classes)
    names = [str(n) for n in class_names] if class_names else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a head with {num_classes} classes")
    divisor = int(model.size_divisor)
    if any(s % divisor for s in letterbox.input_size):
        raise ValueError(f"input size {letterbox.input_size} is not a multiple of the model's stride {divisor}")
    return DeployMetadata(
        class_names=names, letterbox=letterbox, size_divisor=divisor, strides=list(model.strides),
        postprocess=dict(test_cfg), with_nms=with_nms, dynamic_batch=dynamic_batch,
        channels_first=not with_nms if channels_first is None else channels_first,
        source={"detkit": detkit.__version__, "torch": torch.__version__, **dict(source or {})},
    )


def export_module(detector: nn.Module, metadata: DeployMetadata) -> nn.Module:
    """The module whose trace becomes the graph the metadata describes."""
    if metadata.with_nms:
        return DecodedWithNMS(detector, metadata.postprocess)
    return DecodedOutputs(detector, channels_first=metadata.channels_first)


def export_onnx(
    detector: nn.Module,
    path: str | os.PathLike,
    metadata: DeployMetadata,
    *,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``detector`` as an ONNX model with ``metadata`` in its ``metadata_props``.

    Args:
        detector: a detkit ``Detector`` (put in eval mode; its device is used for tracing).
        path: output ``.onnx`` file (parent folders are created).
        metadata: input size, letterbox, classes, post-processing; ``with_nms`` and
            ``dynamic_batch`` choose the graph.
        opset: ONNX opset, at least :data:`MIN_OPSET`.

    Returns:
        The written path, after ``onnx.checker`` accepted the model.
    """
    from detkit.extras import require

    onnx = require("onnx", "ONNX export")
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is not supported; use {MIN_OPSET} or newer")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"ONNX output path must end in .onnx, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    detector.eval()
    module = export_module(detector, metadata).eval()
    device = next(detector.parameters()).device
    # Batch 2 so that no size-1 dimension of the trace is mistaken for a broadcastable one.
    example = torch.zeros(2 if metadata.dynamic_batch else 1, 3, *metadata.input_size, device=device)
    outputs = list(metadata.output_names)
    dynamic_axes = {name: {0: "batch"} for name in [INPUT_NAME, *outputs]} if metadata.dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        # The trace turns shape checks and prior grids into constants, which is what a fixed
        # input size means; the exporter warns about each of them and about being the legacy one.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*torch.jit.script. is deprecated.*", category=FutureWarning)
        traced = io.BytesIO()  # in memory: ``path`` is written once, whole (a full disk leaves no partial file)
        torch.onnx.export(
            module, (example,),
            traced,  # type: ignore[arg-type]  # a file object is accepted as f
            dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
            output_names=outputs, dynamic_axes=dynamic_axes, do_constant_folding=True,
        )
    model = onnx.load_from_string(traced.getvalue())
    del model.metadata_props[:]
    for key, value in metadata.to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    atomic_write_bytes(path, model.SerializeToString())  # a full disk: OutputWriteError, one line
    return path
