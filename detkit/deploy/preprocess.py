"""Letterbox pre-processing shared by every inference backend (PyTorch and ONNX Runtime).

Images are fitted into the network input exactly as the evaluation pipeline does it (the
:class:`detkit.data.LetterBox` transform: aspect kept, ``cv2`` resize, constant grey padding), so
``tools/infer.py`` sees what ``tools/test.py`` measured. The settings travel with an exported
model as metadata (:class:`detkit.deploy.metadata.DeployMetadata`), which is how a runtime
without the config reproduces them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detkit.data import LetterBox

__all__ = ["LetterboxSettings", "letterbox_from_config", "letterbox_images"]

DEFAULT_IMG_SIZE = 640


@dataclass(frozen=True)
class LetterboxSettings:
    """How an image is fitted into the network input.

    Args:
        input_size: ``(H, W)`` of the network input (multiples of the model's stride).
        pad_value: grey level (0..255) of the padding.
        center: pad both sides equally (else the image sits top-left).
        scaleup: enlarge images smaller than the input (else only shrink).
    """

    input_size: tuple[int, int]
    pad_value: int = 114
    center: bool = True
    scaleup: bool = True

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.input_size)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"input_size must be (H, W) positive ints, got {self.input_size!r}")
        if not 0 <= int(self.pad_value) <= 255:
            raise ValueError(f"pad_value must be in 0..255, got {self.pad_value}")
        object.__setattr__(self, "input_size", size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LetterboxSettings:
        return cls(input_size=tuple(d["input_size"]), pad_value=int(d.get("pad_value", 114)),
                   center=bool(d.get("center", True)), scaleup=bool(d.get("scaleup", True)))


def _round_up(size: int | Sequence[int], divisor: int) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
    return -(-h // divisor) * divisor, -(-w // divisor) * divisor


def _val_letterbox(cfg: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The keyword arguments of the ``LetterBox`` in ``cfg.data.val.dataset.pipeline``, if any."""
    try:
        pipeline = cfg["data"]["val"]["dataset"].get("pipeline") or []
    except (KeyError, TypeError, AttributeError):
        return None
    for node in pipeline:
        if isinstance(node, Mapping) and node.get("_target_") is LetterBox:
            return node
    return None


def letterbox_from_config(
    cfg: Mapping[str, Any], size_divisor: int, img_size: int | Sequence[int] | None = None
) -> LetterboxSettings:
    """The letterbox of a config's evaluation pipeline, sized for the network.

    Args:
        cfg: a loaded config; its ``data.val`` pipeline's ``LetterBox`` gives ``pad_value``,
            ``center`` and ``scaleup`` (the transform's defaults when absent).
        size_divisor: the model's largest stride; the input size is rounded up to it.
        img_size: network input side (int) or ``(H, W)``; default ``data.img_size``, else the
            pipeline LetterBox's size, else 640.

    Returns:
        The settings used by :func:`letterbox_images`.
    """
    lb = _val_letterbox(cfg) or {}
    if img_size is None:
        img_size = (cfg.get("data") or {}).get("img_size") or lb.get("size") or DEFAULT_IMG_SIZE
    if not isinstance(img_size, int):
        img_size = tuple(int(v) for v in img_size)
    return LetterboxSettings(
        input_size=_round_up(img_size, int(size_divisor)),
        pad_value=int(lb.get("pad_value", 114)),
        center=bool(lb.get("center", True)),
        scaleup=bool(lb.get("scaleup", True)),
    )


def letterbox_images(
    frames: Sequence[np.ndarray], settings: LetterboxSettings, *, bgr: bool = True
) -> dict[str, Tensor]:
    """Frames -> a network batch with the records needed to map boxes back.

    Args:
        frames: ``B`` images ``(H_i, W_i, 3) uint8`` (BGR as OpenCV reads them, or RGB with ``bgr=False``).
        settings: the letterbox (input size, padding, placement).

    Returns:
        ``images (B, 3, H, W)`` float32 RGB in 0..1, ``scale_factors (B, 2)`` (sx, sy),
        ``pads (B, 2)`` (left, top) and ``ori_sizes (B, 2)`` (h, w): the keys of an evaluation
        batch that :func:`detkit.models.postprocess.undo_letterbox_batch` reads.
    """
    if not frames:
        raise ValueError("letterbox_images got no frames")
    transform = LetterBox(settings.input_size, pad_value=settings.pad_value, center=settings.center,
                          scaleup=settings.scaleup)
    empty = np.zeros((0, 4), np.float32)
    imgs, scales, pads, sizes = [], [], [], []
    for frame in frames:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        rgb = np.ascontiguousarray(frame[..., ::-1]) if bgr else frame
        sample = transform({"img": rgb, "boxes": empty, "ignore_boxes": empty})
        imgs.append(sample["img"])
        scales.append(sample["scale_factor"])
        pads.append(sample["pad"])
        sizes.append(frame.shape[:2])
    stacked = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)  # (B, H, W, 3) -> (B, 3, H, W)
    return {
        "images": stacked.float().div_(255.0),
        "scale_factors": torch.tensor(scales, dtype=torch.float32),
        "pads": torch.tensor(pads, dtype=torch.float32),
        "ori_sizes": torch.tensor(sizes, dtype=torch.long),
    }
