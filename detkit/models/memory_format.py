"""channels_last (NHWC) for inference on the CPU.

PyTorch's CPU convolutions (oneDNN) run faster on NHWC activations and weights than on the default
NCHW layout: measured on a quiet machine (``benchmarks/network_vs_ultralytics.py``, fused models,
640 input), channels_last took 0.74-0.90x the time of the contiguous model for YOLOv8n/s, YOLO11n and
YOLO26n at batch 1 and 8 (docs/deployment.md). The outputs are the same within fp32 rounding.

Only inference copies are converted (a fused copy, a model loaded for inference): ``nn.Module.to``
changes a model in place, and the trainer's weights keep their layout.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import Tensor, nn

__all__ = ["images_to_channels_last", "is_channels_last", "to_inference_memory_format", "wants_channels_last"]

M = TypeVar("M", bound=nn.Module)


def wants_channels_last(device: torch.device | str) -> bool:
    """True where detkit runs inference in channels_last: on the CPU (elsewhere the layout is left alone)."""
    return torch.device(device).type == "cpu"


def to_inference_memory_format(model: M, device: torch.device | str, enabled: bool = True) -> M:
    """``model`` with its 4-D weights in channels_last when ``enabled`` and ``device`` is the CPU, in place.

    Args:
        model: an inference-only model (a fused copy, a model loaded for inference): never training weights.
        device: where the model runs.
        enabled: False leaves the model as it is.

    Returns:
        ``model`` itself (converted or not).
    """
    if enabled and wants_channels_last(device):
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def is_channels_last(model: nn.Module) -> bool:
    """True when every 4-D parameter of ``model`` is in channels_last (and there is at least one)."""
    weights = [p for p in model.parameters() if p.dim() == 4]
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


def images_to_channels_last(images: Tensor) -> Tensor:
    """``images (B, 3, H, W)`` in channels_last (same values, NHWC strides)."""
    return images.contiguous(memory_format=torch.channels_last)
