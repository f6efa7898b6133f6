"""Calibration images for int8 post-training quantization, and exported models evaluated like checkpoints.

:func:`calibration_batches` draws images of a config's training split and letterboxes them with
:func:`~detkit.deploy.preprocess.letterbox_images` (the preprocessing every backend's inference
uses); :class:`ExportedEvalModel` lets :func:`detkit.engine.evaluate.evaluate` (``tools/test.py``)
run an ``.onnx`` / ``.xml`` model on the val split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor, nn

from detkit.deploy.preprocess import LetterboxSettings, letterbox_images
from detkit.errors import ConfigError

__all__ = ["ExportedEvalModel", "calibration_batches"]


def calibration_batches(cfg: Mapping[str, Any], letterbox: LetterboxSettings, count: int = 300,
                        split: str = "train") -> list[np.ndarray]:
    """``count`` images of ``cfg``'s ``split`` (spread evenly over it; all of them when it has fewer),
    each letterboxed alone: a list of ``(1, 3, H, W)`` float32 RGB 0..1 arrays.

    Raises:
        ConfigError / DataError: the split cannot be built (:func:`detkit.engine.builders.build_dataset`).
        ValueError: ``count`` < 1.
    """
    from detkit.engine.builders import build_dataset

    if count < 1:
        raise ValueError(f"calibration needs at least one image, got count={count}")
    dataset = build_dataset(cfg, split)
    picks = np.unique(np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int))
    return [letterbox_images([dataset.read_image(int(i))], letterbox, bgr=False)["images"].numpy()
            for i in picks]


class ExportedEvalModel(nn.Module):
    """An exported detector (:class:`~detkit.deploy.onnx_runtime.OnnxDetector` or
    :class:`~detkit.deploy.openvino_runtime.OpenVinoDetector`) with the ``predict(batch)`` /
    ``size_divisor`` that detkit's evaluation loop calls.

    A batch ``images (B, 3, H, W)`` must have the exported input size (refused in one line
    otherwise: set the config's val size to it); a model exported without a dynamic batch runs it
    one image at a time.
    """

    def __init__(self, runtime: Any) -> None:
        super().__init__()
        self.runtime = runtime
        self.size_divisor = int(runtime.size_divisor)

    def predict(self, batch: Mapping[str, Any], **overrides: Any) -> list[dict[str, Tensor]]:
        """Detections per image in original pixels, as ``Detector.predict``."""
        images = batch["images"]
        size = tuple(images.shape[-2:])
        if size != self.runtime.metadata.input_size:
            h, w = self.runtime.metadata.input_size
            raise ConfigError(f"{self.runtime.path.name} takes {h}x{w} inputs, the val pipeline gives "
                              f"{size[0]}x{size[1]}: set the val size (data.img_size / --img-size) to the exported one")
        step = images.shape[0] if self.runtime.metadata.dynamic_batch else 1
        dets: list[dict[str, Tensor]] = []
        for start in range(0, images.shape[0], step):
            part = {k: v[start:start + step] if isinstance(v, Tensor | list) else v for k, v in batch.items()}
            part["images"] = images[start:start + step].cpu()
            dets += self.runtime.predict(part, **overrides)
        return dets

    def forward(self, images: Tensor) -> Any:  # pragma: no cover - evaluation calls predict
        raise TypeError("an exported model is evaluated through predict(batch)")

