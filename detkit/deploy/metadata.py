"""What an exported model carries besides its graph: ONNX ``metadata_props`` written by detkit.

Every value is a JSON string under a plain key, so any runtime (C++, JavaScript, another Python
tool) can read them without detkit::

    format            "detkit-onnx"             format_version   "1"
    class_names       ["rectangle", ...]        input_size       [320, 320]       (H, W)
    input_name        "images"                  input_format     "RGB float32 0..1, (B, 3, H, W)"
    letterbox         {"input_size": [320, 320], "pad_value": 114, "center": true, "scaleup": true}
    size_divisor      32                        strides          [8, 16, 32]
    score_thr 0.001   nms_iou_thr 0.65          nms_pre 30000    max_per_img 300  multi_label true
    with_nms          false                     outputs          ["boxes", "scores"]
    channels_first    true                      dynamic_batch    true
    source            {"config": ..., "checkpoint": ..., "detkit": ..., "torch": ...}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from detkit.deploy.preprocess import LetterboxSettings
from detkit.errors import CheckpointError

__all__ = ["DECODED_OUTPUTS", "FORMAT", "FORMAT_VERSION", "NMS_OUTPUTS", "DeployMetadata"]

FORMAT = "detkit-onnx"
# 2: ``channels_first`` outputs (written only by such models, so a detkit that predates the layout
# refuses them instead of reading (B, 4, N) as (B, N, 4)); 1: every model before it.
FORMAT_VERSION = 2
INPUT_NAME = "images"
INPUT_FORMAT = "RGB float32 0..1, (B, 3, H, W)"
# Without NMS: boxes (B, N, 4) xyxy input pixels, scores (B, N, C) = obj * cls; with channels_first
# (detkit's exports since format_version 2) boxes (B, 4, N), scores (B, C, N).
DECODED_OUTPUTS = ("boxes", "scores")
# With NMS: num_dets (B,) int64, det_boxes (B, D, 4), det_scores (B, D), det_labels (B, D) int64
# (rows past num_dets are padding: zero boxes and scores, label -1).
NMS_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_labels")
POSTPROCESS_KEYS = ("score_thr", "nms_iou_thr", "nms_pre", "max_per_img", "multi_label", "nms")
# Settings that models exported before they existed take (``nms``: every head ran NMS then).
POSTPROCESS_DEFAULTS = {"nms": True}


@dataclass
class DeployMetadata:
    """Settings a runtime needs to reproduce detkit's pre- and post-processing.

    Args:
        class_names: one name per class index.
        letterbox: input size and letterbox settings (:class:`LetterboxSettings`).
        size_divisor: the model's largest stride (input sides are multiples of it).
        strides: stride of each output level.
        postprocess: ``score_thr``, ``nms_iou_thr``, ``nms_pre``, ``max_per_img``, ``multi_label``,
            ``nms`` (False for one-to-one heads: the "NMS" graph then only keeps the best).
        with_nms: the graph ends with NMS (outputs :data:`NMS_OUTPUTS`, else :data:`DECODED_OUTPUTS`).
        channels_first: the decoded outputs are ``boxes (B, 4, N)``, ``scores (B, C, N)`` (a graph without
            transposes; the runtimes read them through transposed views), else ``(B, N, 4)``, ``(B, N, C)``.
            Only without NMS.
        dynamic_batch: the batch dimension is free (else fixed to 1).
        source: provenance (config, checkpoint, versions), informative only.
    """

    class_names: list[str]
    letterbox: LetterboxSettings
    size_divisor: int
    strides: list[int]
    postprocess: dict[str, Any]
    with_nms: bool = False
    dynamic_batch: bool = False
    channels_first: bool = False
    source: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.postprocess = {**POSTPROCESS_DEFAULTS, **self.postprocess}
        missing = [k for k in POSTPROCESS_KEYS if k not in self.postprocess]
        if missing:
            raise ValueError(f"postprocess settings miss {missing}; expected {list(POSTPROCESS_KEYS)}")
        self.postprocess = {k: self.postprocess[k] for k in POSTPROCESS_KEYS}
        if self.with_nms and self.channels_first:
            raise ValueError("channels_first describes decoded outputs; a graph with NMS has none")

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of the network input."""
        return self.letterbox.input_size

    @property
    def output_names(self) -> tuple[str, ...]:
        return NMS_OUTPUTS if self.with_nms else DECODED_OUTPUTS

    def to_props(self) -> dict[str, str]:
        """``{key: JSON string}`` for ONNX ``metadata_props``."""
        values: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION if self.channels_first else 1,
            "class_names": list(self.class_names),
            "input_size": list(self.input_size),
            "input_name": INPUT_NAME,
            "input_format": INPUT_FORMAT,
            "letterbox": self.letterbox.to_dict(),
            "size_divisor": int(self.size_divisor),
            "strides": [int(s) for s in self.strides],
            **self.postprocess,
            "with_nms": bool(self.with_nms),
            "outputs": list(self.output_names),
            "dynamic_batch": bool(self.dynamic_batch),
            **({"channels_first": True} if self.channels_first else {}),
            "source": dict(self.source),
        }
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> DeployMetadata:
        """Parse :meth:`to_props`' output; CheckpointError for a model detkit did not export."""
        if props.get("format") != FORMAT:
            raise CheckpointError(f"this ONNX model has no detkit metadata (format={props.get('format')!r}, "
                                  f"expected {FORMAT!r}); export it with detkit export")
        version = int(props.get("format_version", "0"))
        if version > FORMAT_VERSION:
            raise CheckpointError(f"metadata format_version {version} is newer than this detkit's "
                                  f"({FORMAT_VERSION}); update detkit")
        try:
            v = {k: json.loads(s) for k, s in props.items() if k not in ("format", "input_name", "input_format")}
            return cls(
                class_names=[str(n) for n in v["class_names"]],
                letterbox=LetterboxSettings.from_dict(v["letterbox"]),
                size_divisor=int(v["size_divisor"]),
                strides=[int(s) for s in v["strides"]],
                postprocess={k: v[k] for k in POSTPROCESS_KEYS if k in v},
                with_nms=bool(v["with_nms"]),
                dynamic_batch=bool(v.get("dynamic_batch", False)),
                channels_first=bool(v.get("channels_first", False)),
                source=dict(v.get("source", {})),
            )
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"detkit metadata is incomplete or malformed: {e!r}") from e
