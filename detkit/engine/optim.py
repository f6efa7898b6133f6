"""Optimizers with parameter groups: weight decay on conv/linear weights only, never on norms or biases."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["OPTIMIZERS", "build_optimizer", "param_groups"]

OPTIMIZERS = ("sgd", "adamw")

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


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any], weight_decay_scale: float = 1.0) -> torch.optim.Optimizer:
    """Build SGD or AdamW from ``cfg`` with :func:`param_groups`.

    Args:
        cfg: ``dict(type="sgd"|"adamw", lr, momentum=0.937, weight_decay=5e-4, nesterov=True,
            betas=(momentum, 0.999), eps=1e-8)``; for AdamW ``momentum`` is beta1.
        weight_decay_scale: multiplies ``weight_decay`` (the trainer passes
            ``batch * accumulate / nominal_batch`` as YOLOv5 does).

    Every group stores ``initial_lr`` and ``initial_momentum`` for the schedules.
    """
    kind = str(cfg.get("type", "sgd")).lower()
    if kind not in OPTIMIZERS:
        raise ValueError(f"train.optimizer.type {kind!r} is not supported; accepted: {', '.join(OPTIMIZERS)}")
    if "lr" not in cfg:
        raise ValueError("train.optimizer needs an 'lr' (e.g. optimizer=dict(type='sgd', lr=0.01))")
    lr = float(cfg["lr"])
    momentum = float(cfg.get("momentum", 0.937 if kind == "sgd" else 0.9))
    wd = float(cfg.get("weight_decay", 5e-4 if kind == "sgd" else 0.05)) * weight_decay_scale
    groups = [g for g in param_groups(model, wd) if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if kind == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            groups, lr=lr, momentum=momentum, nesterov=bool(cfg.get("nesterov", True)))
    else:
        betas = tuple(cfg.get("betas", (momentum, 0.999)))
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=float(cfg.get("eps", 1e-8)))
    for g in opt.param_groups:
        g["initial_lr"] = lr
        g["initial_momentum"] = momentum
    return opt
