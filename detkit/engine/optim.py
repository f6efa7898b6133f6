"""Optimizers with parameter groups: weight decay on conv/linear weights only, never on norms or biases.

Each optimizer has its own settings class with its own defaults (``train.optimizer``): a config
or an override that says ``dict(type="adamw", lr=1e-3)`` gets AdamW's momentum and weight decay,
never SGD's (a ``type`` change replaces the whole dict when configs merge).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from detkit.schema import SettingError, check_value

__all__ = ["OPTIMIZERS", "AdamWSettings", "OptimizerSettings", "SGDSettings", "build_optimizer", "param_groups"]


@dataclass
class SGDSettings:
    """``train.optimizer=dict(type="sgd", ...)``: SGD with momentum (YOLOv5's defaults)."""

    type: Literal["sgd"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.937
    weight_decay: float = 5e-4
    nesterov: bool = True

    def __post_init__(self) -> None:
        _check_common(self)


@dataclass
class AdamWSettings:
    """``train.optimizer=dict(type="adamw", ...)``: AdamW; ``momentum`` is beta1 (the warm-up
    momentum ramp moves it, as it moves SGD's momentum)."""

    type: Literal["adamw"] = "adamw"
    lr: float = 0.001
    momentum: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.05
    eps: float = 1e-8

    def __post_init__(self) -> None:
        _check_common(self)
        if not 0.0 <= self.beta2 < 1.0:
            raise SettingError("train.optimizer.beta2", f"must be in [0, 1), got {self.beta2}")


OptimizerSettings = SGDSettings | AdamWSettings
OPTIMIZERS = ("sgd", "adamw")


def _check_common(s: SGDSettings | AdamWSettings) -> None:
    # `not x > 0` rather than `x <= 0`: NaN fails every comparison and must fail the check too.
    if not (math.isfinite(s.lr) and s.lr > 0):
        raise SettingError("train.optimizer.lr", f"must be a finite number > 0, got {s.lr}")
    if not (math.isfinite(s.weight_decay) and s.weight_decay >= 0):
        raise SettingError("train.optimizer.weight_decay", f"must be a finite number >= 0, got {s.weight_decay}")
    if not 0.0 <= s.momentum < 1.0:
        raise SettingError("train.optimizer.momentum", f"must be in [0, 1), got {s.momentum}")
    if isinstance(s, AdamWSettings) and not (math.isfinite(s.eps) and s.eps > 0):
        raise SettingError("train.optimizer.eps", f"must be a finite number > 0, got {s.eps}")

# Module types whose weights are normalisation scales: no weight decay (as YOLOv5 / mmdet).
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into three groups, in this order:

    0. ``"decay"``: weights of every non-norm module, with ``weight_decay``;
    1. ``"norm"``: weights of normalisation layers, decay 0;
    2. ``"bias"``: every bias, decay 0 (YOLOv5 warms this group's LR from a higher value).

    Each group carries ``name``; parameters that do not require grad are left out; a parameter
    shared by several modules appears once.
    """
    decay, norm, bias, seen = [], [], [], set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if pname == "bias":
                bias.append(p)
            elif isinstance(module, NORM_TYPES):
                norm.append(p)
            else:
                decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": norm, "weight_decay": 0.0, "name": "norm"},
        {"params": bias, "weight_decay": 0.0, "name": "bias"},
    ]


def build_optimizer(model: nn.Module, settings: OptimizerSettings | Mapping[str, Any],
                    weight_decay_scale: float = 1.0) -> torch.optim.Optimizer:
    """Build SGD or AdamW with :func:`param_groups`.

    Args:
        settings: :class:`SGDSettings` / :class:`AdamWSettings`, or the config dict
            ``dict(type="sgd"|"adamw", ...)`` they are read from (missing keys: that type's defaults).
        weight_decay_scale: multiplies ``weight_decay`` (the trainer passes
            ``batch * accumulate / nominal_batch`` as YOLOv5 does).

    Every group stores ``initial_lr`` and ``initial_momentum`` for the schedules.
    """
    if isinstance(settings, Mapping):
        settings = check_value(settings, OptimizerSettings, "train.optimizer")
    wd = settings.weight_decay * weight_decay_scale
    groups = [g for g in param_groups(model, wd) if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if isinstance(settings, SGDSettings):
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum,
                                                     nesterov=settings.nesterov)
    else:
        opt = torch.optim.AdamW(groups, lr=settings.lr, betas=(settings.momentum, settings.beta2), eps=settings.eps)
    for g in opt.param_groups:
        g["initial_lr"] = settings.lr
        g["initial_momentum"] = settings.momentum
    return opt
