"""Optimizers with parameter groups: weight decay on conv/linear weights only, never on norms or biases.

The config names the optimizer as a lazy call of a ``torch.optim`` class (``train.optimizer``)::

    optimizer=L(torch.optim.SGD)(lr=0.01, momentum=0.937, weight_decay=5e-4, nesterov=True)
    optimizer=L(torch.optim.AdamW)(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05)

The parameter groups are the trainer's (:func:`param_groups`): :func:`build_optimizer` passes them
as ``params`` when it builds the call, with ``weight_decay`` on the decay group only. Swapping the
class (a new ``L(...)`` over the base's) replaces the whole call; ``--cfg-options
train.optimizer.lr=0.02`` changes one argument.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from detkit.lazy import TARGET_KEY, L, call_text, instantiate
from detkit.schema import SettingError, default_of, target_product

__all__ = ["DEFAULT_OPTIMIZER", "build_optimizer", "check_optimizer_call", "optimizer_from_legacy", "param_groups"]

# The optimizer of a config that names none (YOLOv5's SGD).
DEFAULT_OPTIMIZER = L(torch.optim.SGD)(lr=0.01, momentum=0.937, weight_decay=5e-4, nesterov=True)


def optimizer_from_legacy(old: Mapping[str, Any]) -> Any:
    """The lazy call that the pre-0.x form ``dict(type="sgd" | "adamw", ...)`` meant, with its
    values (the defaults it had for the missing ones); for messages and for old checkpoints' configs.

    Raises:
        ValueError: ``type`` is neither ``"sgd"`` nor ``"adamw"``, or a key that type did not have.
    """
    args = {k: v for k, v in old.items() if k != "type"}
    kind = old.get("type", "sgd")
    if kind == "sgd":
        known = dict(lr=0.01, momentum=0.937, weight_decay=5e-4, nesterov=True)
        target: Any = torch.optim.SGD
    elif kind == "adamw":
        known = dict(lr=0.001, momentum=0.9, beta2=0.999, weight_decay=0.05, eps=1e-8)
        target = torch.optim.AdamW
    else:
        raise ValueError(f"optimizer type {kind!r} is not one of 'sgd', 'adamw'")
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ValueError(f"optimizer type {kind!r} has no key(s) {unknown}")
    values = {**known, **args}
    if target is torch.optim.AdamW:
        values["betas"] = (values.pop("momentum"), values.pop("beta2"))
    return L(target)(**values)


def _momentum_of(group: Mapping[str, Any]) -> float | None:
    """The momentum the warm-up ramps: SGD's ``momentum``, Adam's beta1; None for neither."""
    if "betas" in group:
        return float(group["betas"][0])
    if "momentum" in group:
        return float(group["momentum"])
    return None


def check_optimizer_call(node: Any, key: str = "train.optimizer") -> Any:
    """``node`` checked as the optimizer of a config: a lazy call of a ``torch.optim.Optimizer``
    class with a finite ``lr`` > 0, ``weight_decay`` >= 0, ``momentum`` / ``betas`` in [0, 1) and
    ``eps`` > 0 where given; the old ``dict(type=...)`` form is refused with the new form written out.

    Raises:
        SettingError: naming ``key`` (or ``key.<argument>``).
    """
    if isinstance(node, Mapping) and "type" in node:  # alone, or merged into a base's lazy call
        given = {k: v for k, v in node.items() if k != TARGET_KEY} if TARGET_KEY not in node else {}
        new = "L(torch.optim.SGD)(lr=..., momentum=...)"
        for old in (given, {"type": node["type"]}):  # its own values where they make a call, else the type's defaults
            try:
                new = call_text(optimizer_from_legacy({**old, "type": node["type"]}), lazy=True, qualified=True)
                break
            except ValueError:
                continue
        raise SettingError(key, f"dict(type={node['type']!r}, ...) is the old form of an optimizer; name the class "
                                f"with a lazy call: {key.rpartition('.')[2]}={new} (see docs/changelog.md)")
    if not (isinstance(node, Mapping) and TARGET_KEY in node):
        raise SettingError(key, f"expected a lazy call of an optimizer class such as "
                                f"L(torch.optim.SGD)(lr=0.01, momentum=0.9), got {node!r}")
    product = target_product(node[TARGET_KEY])
    if product is not None and not issubclass(product, torch.optim.Optimizer):
        raise SettingError(key, f"{product.__qualname__} is not a torch.optim.Optimizer")
    checks = (("lr", lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0"),
              ("weight_decay", lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0"),
              ("momentum", lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
              ("eps", lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0"))
    for name, ok, message in checks:
        value = node.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not ok(value):
            raise SettingError(f"{key}.{name}", f"{message}, got {float(value)}")
    betas = node.get("betas")
    if isinstance(betas, (list, tuple)) and not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
        raise SettingError(f"{key}.betas", f"must be in [0, 1), got {tuple(betas)}")
    return node


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


def build_optimizer(model: nn.Module, optimizer: Mapping[str, Any] = DEFAULT_OPTIMIZER,
                    weight_decay_scale: float = 1.0) -> torch.optim.Optimizer:
    """Build the optimizer a lazy call describes over :func:`param_groups` of ``model``.

    Args:
        optimizer: a lazy call of a ``torch.optim`` class (``L(torch.optim.SGD)(lr=0.01, momentum=0.9)``);
            its ``weight_decay`` (the class's default when absent) goes to the ``"decay"`` group only.
        weight_decay_scale: multiplies ``weight_decay`` (the trainer passes
            ``batch * accumulate / nominal_batch`` as YOLOv5 does).

    Every group stores ``initial_lr`` and ``initial_momentum`` (SGD's momentum, Adam's beta1) for the schedules.

    Raises:
        ValueError: the model has no trainable parameters.
    """
    target = optimizer[TARGET_KEY]
    args = {k: v for k, v in optimizer.items() if k != TARGET_KEY}
    weight_decay = args.pop("weight_decay", None)
    if weight_decay is None:
        weight_decay = default_of(target, "weight_decay")
    groups = [g for g in param_groups(model, float(weight_decay) * weight_decay_scale) if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    opt: torch.optim.Optimizer = instantiate(L(target)(**args), "train.optimizer", params=groups)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
        momentum = _momentum_of(g)
        if momentum is not None:
            g["initial_momentum"] = momentum
    return opt
