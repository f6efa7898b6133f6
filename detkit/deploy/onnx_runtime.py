"""Run an exported detkit ONNX model with ONNX Runtime, through the PyTorch path's post-processing.

:class:`OnnxDetector` reads the model's metadata and offers the same ``predict(batch)`` as
:class:`detkit.models.Detector`: the batch is letterboxed by
:func:`detkit.deploy.preprocess.letterbox_images`, boxes come back through
:func:`detkit.models.postprocess.postprocess_decoded` (graphs without NMS) and
:func:`detkit.models.postprocess.undo_letterbox_batch` — the functions the PyTorch model uses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detkit.deploy.metadata import INPUT_NAME, DeployMetadata
from detkit.errors import CheckpointError, ConfigError
from detkit.models.postprocess import check_postprocess_args, postprocess_decoded, undo_letterbox_batch

__all__ = ["SPIN_KEY", "OnnxDetector", "decoded_priors_first"]

SPIN_KEY = "session.intra_op.allow_spinning"  # "0": idle intra-op threads sleep instead of spin-waiting


def decoded_priors_first(outputs: Mapping[str, np.ndarray], metadata: DeployMetadata) -> tuple[Tensor, Tensor]:
    """A decoded graph's ``boxes`` and ``scores`` as ``(B, N, 4)``, ``(B, N, C)`` tensors: channel-first outputs
    (``metadata.channels_first``) as transposed views, without a copy."""
    boxes, scores = torch.from_numpy(outputs["boxes"]), torch.from_numpy(outputs["scores"])
    if metadata.channels_first:
        return boxes.transpose(1, 2), scores.transpose(1, 2)
    return boxes, scores


class OnnxDetector:
    """An exported detkit model in an ``onnxruntime.InferenceSession``.

    Args:
        path: the ``.onnx`` file written by :func:`detkit.deploy.export_onnx` / ``tools/export.py``.
        providers: ONNX Runtime execution providers (default: CPU).
        threads: intra-op threads (default: ONNX Runtime's choice).
        spin: ONNX Runtime's default (True): idle intra-op threads spin-wait for the next piece of work,
            the fastest on a quiet machine (YOLOv8n 640, 2 threads: 51 ms against 54-70 ms without);
            False (``session.intra_op.allow_spinning`` = 0): they sleep, which was 1.9x faster on a
            machine busy with other work (training, other processes) and leaves those cores to it.
        session_config: further ``SessionOptions.add_session_config_entry`` pairs (they win over ``spin``).

    The session optimises the graph at ONNX Runtime's default level, ``ORT_ENABLE_ALL``.
    """

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None,
                 threads: int | None = None, session_config: Mapping[str, str] | None = None, *,
                 spin: bool = True) -> None:
        from detkit.extras import require

        ort = require("onnxruntime", "running .onnx models")
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"ONNX model not found: {self.path}")
        if not isinstance(spin, bool):
            raise TypeError(f"spin must be a bool, got {spin!r}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        entries = {} if spin else {SPIN_KEY: "0"}
        entries.update(session_config or {})
        for key, value in entries.items():
            options.add_session_config_entry(key, value)
        self.session = ort.InferenceSession(str(self.path), options,
                                            providers=list(providers or ["CPUExecutionProvider"]))
        self.metadata = DeployMetadata.from_props(self.session.get_modelmeta().custom_metadata_map)
        self.output_names = [o.name for o in self.session.get_outputs()]
        if tuple(self.output_names) != self.metadata.output_names:
            raise CheckpointError(f"{self.path}: outputs {self.output_names} differ from the metadata's "
                                  f"{list(self.metadata.output_names)}")

    @property
    def class_names(self) -> list[str]:
        return self.metadata.class_names

    @property
    def size_divisor(self) -> int:
        return self.metadata.size_divisor

    def run(self, images: Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """The graph's raw outputs by name for ``images (B, 3, H, W)`` float32 (H, W = the metadata's)."""
        arr = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim != 4 or arr.shape[1] != 3 or tuple(arr.shape[2:]) != self.metadata.input_size:
            raise ValueError(f"{self.path.name} takes images (B, 3, {self.metadata.input_size[0]}, "
                             f"{self.metadata.input_size[1]}), got {arr.shape}; letterbox with the model's metadata")
        if not self.metadata.dynamic_batch and arr.shape[0] != 1:
            raise ValueError(f"{self.path.name} was exported with batch 1 (without a dynamic batch), "
                             f"got batch {arr.shape[0]}")
        return dict(zip(self.output_names, self.session.run(self.output_names, {INPUT_NAME: arr})))

    def predict(self, batch: Mapping[str, Any], **overrides: Any) -> list[dict[str, Tensor]]:
        """Detections per image, as :meth:`detkit.models.Detector.predict` returns them.

        Args:
            batch: ``images (B, 3, H, W)`` and the letterbox records (``scale_factors``, ``pads``,
                ``ori_sizes``) of :func:`~detkit.deploy.preprocess.letterbox_images`.
            overrides: post-processing settings for this call; a graph with NMS inside fixed
                them at export, so there only a ``score_thr`` at or above the exported one is accepted.

        Returns:
            ``[dict(boxes (K, 4) xyxy original pixels, scores (K,), labels (K,) long)]`` (CPU tensors).
        """
        settings = {**self.metadata.postprocess, **overrides}
        unknown = set(overrides) - set(self.metadata.postprocess)
        if unknown:
            raise ValueError(f"unknown post-processing options {sorted(unknown)}; accepted: "
                             f"{sorted(self.metadata.postprocess)}")
        out = self.run(batch["images"])
        if self.metadata.with_nms:
            dets = self._nms_outputs(out, settings)
        else:
            boxes, scores = decoded_priors_first(out, self.metadata)
            dets = postprocess_decoded(boxes, scores, **settings)
        return undo_letterbox_batch(dets, batch, self.metadata.input_size)

    def _nms_outputs(self, out: dict[str, np.ndarray], settings: dict[str, Any]) -> list[dict[str, Tensor]]:
        fixed = {k: v for k, v in settings.items() if k != "score_thr" and v != self.metadata.postprocess[k]}
        exported_thr = self.metadata.postprocess["score_thr"]
        if fixed or settings["score_thr"] < exported_thr:
            raise ConfigError(f"{self.path.name} has NMS inside, with settings fixed at export "
                              f"{self.metadata.postprocess}; only score_thr >= {exported_thr} can change "
                              "here. Export it without NMS inside to choose them at run time")
        check_postprocess_args(settings["score_thr"], settings["nms_iou_thr"], settings["nms_pre"],
                               settings["max_per_img"])
        dets = []
        for n, boxes, scores, labels in zip(out["num_dets"], out["det_boxes"], out["det_scores"], out["det_labels"]):
            keep = scores[: int(n)] > settings["score_thr"]
            dets.append({"boxes": torch.from_numpy(boxes[: int(n)][keep]).float(),
                         "scores": torch.from_numpy(scores[: int(n)][keep]).float(),
                         "labels": torch.from_numpy(labels[: int(n)][keep]).long()})
        return dets
