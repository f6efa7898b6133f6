"""Exponential moving average of model weights with the YOLOv5 warm-up ramp."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEMA", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class ModelEMA:
    """``ema = d * ema + (1 - d) * model`` after every optimizer step, with
    ``d = decay * (1 - exp(-updates / tau))`` so early, fast-changing weights are not averaged in
    for long (YOLOv5's ramp). Float parameters and buffers are averaged; integer buffers
    (e.g. BatchNorm's ``num_batches_tracked``) are copied.

    Args:
        model: the model being trained (a DDP wrapper is unwrapped).
        decay: the asymptotic decay (0 < decay < 1).
        tau: updates over which the ramp rises (about 63% of ``decay`` at ``tau``).
        updates: updates already done (when resuming).

    ``self.module`` is the averaged copy, in eval mode, used for evaluation and saved.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if tau <= 0:
            raise ValueError(f"EMA tau must be > 0, got {tau}")
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    def current_decay(self) -> float:
        """The decay the next update uses."""
        return self.decay * (1.0 - math.exp(-(self.updates + 1) / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend ``model``'s current weights into the average."""
        d = self.current_decay()
        self.updates += 1
        src = unwrap_model(model).state_dict()
        for name, ema_v in self.module.state_dict().items():
            v = src[name].detach()
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(d).add_(v.to(ema_v.dtype), alpha=1.0 - d)
            else:
                ema_v.copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay, "tau": self.tau}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
