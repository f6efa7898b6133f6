"""Calibration images for int8 post-training quantization, held-out images for its accuracy
control, and exported models evaluated like checkpoints.

:func:`calibration_batches` draws images of a config's training split and letterboxes them with
:func:`~detkit.deploy.preprocess.letterbox_images` (the preprocessing every backend's inference
uses); :func:`held_out_set` takes other images of that split (never the calibration ones, never the
val split AP is reported on) for :func:`held_out_ap`, the metric NNCF's accuracy control keeps;
:class:`ExportedEvalModel` lets :func:`detkit.engine.evaluate.evaluate` (``tools/test.py``)
run an ``.onnx`` / ``.xml`` model on the val split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from detkit.deploy.preprocess import LetterboxSettings, letterbox_images
from detkit.errors import ConfigError, DataError

__all__ = ["ExportedEvalModel", "HeldOutSet", "calibration_batches", "calibration_indices", "held_out_ap",
           "held_out_indices", "held_out_set"]


def calibration_indices(total: int, count: int) -> np.ndarray:
    """The ``min(count, total)`` indices of a split of ``total`` images that calibration reads: spread
    evenly over it, first and last included (sorted, unique).

    Raises:
        ValueError: ``count`` < 1.
    """
    if count < 1:
        raise ValueError(f"calibration needs at least one image, got count={count}")
    return np.unique(np.linspace(0, total - 1, num=min(count, total)).round().astype(int))


def held_out_indices(total: int, count: int, taken: Sequence[int] | np.ndarray) -> np.ndarray:
    """``count`` indices of a split of ``total`` images outside ``taken`` (the calibration
    images), spread evenly over the ones left (sorted, unique).

    Raises:
        ValueError: ``count`` < 1.
        DataError: fewer than ``count`` images are left.
    """
    if count < 1:
        raise ValueError(f"accuracy control needs at least one held-out image, got count={count}")
    free = np.setdiff1d(np.arange(total), np.asarray(taken, dtype=int))
    if len(free) < count:
        raise DataError(f"the training split has {total} images and calibration takes {total - len(free)}: "
                        f"{len(free)} left, {count} asked for accuracy control (lower --calib-images or "
                        "--accuracy-images)")
    picks: np.ndarray = free[np.unique(np.linspace(0, len(free) - 1, num=count).round().astype(int))]
    return picks


def calibration_batches(cfg: Mapping[str, Any], letterbox: LetterboxSettings, count: int = 300,
                        split: str = "train") -> list[np.ndarray]:
    """``count`` images of ``cfg``'s ``split`` (:func:`calibration_indices`; all of them when it has
    fewer), each letterboxed alone: a list of ``(1, 3, H, W)`` float32 RGB 0..1 arrays.

    Raises:
        ConfigError / DataError: the split cannot be built (:func:`detkit.engine.builders.build_dataset`).
        ValueError: ``count`` < 1.
    """
    from detkit.engine.builders import build_dataset

    if count < 1:
        raise ValueError(f"calibration needs at least one image, got count={count}")
    dataset = build_dataset(cfg, split)
    return [letterbox_images([dataset.read_image(int(i))], letterbox, bgr=False)["images"].numpy()
            for i in calibration_indices(len(dataset), count)]


@dataclass
class HeldOutSet:
    """Labelled training images kept out of calibration, letterboxed as at inference.

    Attributes:
        dataset: the training split's dataset with the inference letterbox as its only transform.
        indices: ``(K,)`` the held-out images' indices in it (:func:`held_out_indices`).
        ground_truth: the split's COCO instances dict (the evaluator keeps the images asked for).
        collate: the config's evaluation collate (padding to the model's stride).
    """

    dataset: Any
    indices: np.ndarray
    ground_truth: dict[str, Any]
    collate: Any


class _Items(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """``dataset`` seen through ``indices`` (``len``, ``[k]``, ``cat_ids``)."""

    def __init__(self, dataset: Any, indices: Sequence[int] | np.ndarray) -> None:
        self.dataset, self.indices = dataset, [int(i) for i in indices]
        if hasattr(dataset, "cat_ids"):
            self.cat_ids = dataset.cat_ids

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Any:
        return self.dataset[self.indices[k]]


def held_out_set(cfg: Mapping[str, Any], letterbox: LetterboxSettings, count: int, calib_count: int,
                 size_divisor: int = 32) -> HeldOutSet:
    """``count`` images of ``cfg``'s training split that :func:`calibration_batches` with
    ``calib_count`` does not read (:func:`held_out_indices`), for accuracy control.

    Raises:
        ConfigError / DataError: the split cannot be built, or has too few images left.
    """
    from detkit.data.transforms import Compose, LetterBox
    from detkit.engine.builders import build_dataset
    from detkit.engine.train_utils import collate_from_config

    dataset = build_dataset(cfg, "train")
    indices = held_out_indices(len(dataset), count, calibration_indices(len(dataset), calib_count))
    dataset.pipeline = Compose([LetterBox(letterbox.input_size, pad_value=letterbox.pad_value,
                                          center=letterbox.center, scaleup=letterbox.scaleup)])
    kept = dataset.records
    dataset.records = [kept[int(i)] for i in indices]  # ground truth of these images only
    ground_truth = dataset.coco_dict()
    dataset.records = kept
    return HeldOutSet(dataset, indices, ground_truth, collate_from_config(cfg, size_divisor))


def held_out_ap(runtime: Any, held: HeldOutSet, items: Sequence[int] | None = None) -> float:
    """COCO AP (0..1) of an exported ``runtime`` (``predict(batch)``) on the held-out images
    (``items``: positions in ``held.indices``; default all), evaluated as ``tools/test.py`` does."""
    from detkit.engine.inference import evaluate_dataset
    from detkit.evaluation import COCOEvaluator

    chosen = held.indices if items is None else held.indices[np.asarray(list(items), dtype=int)]
    ids = [int(held.dataset.records[int(i)]["image_id"]) for i in chosen]
    evaluator = COCOEvaluator(held.ground_truth, class_names=getattr(held.dataset, "class_names", None),
                              image_ids=ids)
    metrics, _ = evaluate_dataset(ExportedEvalModel(runtime), _Items(held.dataset, chosen), evaluator,
                                  torch.device("cpu"), held.collate, batch_size=8, num_workers=0, progress=False,
                                  size_divisor=int(runtime.size_divisor))
    return float(metrics["AP"])


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

