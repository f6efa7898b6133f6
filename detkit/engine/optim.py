"""Optimizers with parameter groups: weight decay on conv/linear weights only, never on norms or biases.

The config names the optimizer as a lazy call of a ``torch.optim`` class (``train.optimizer``)::

    optimizer=L(torch.optim.SGD)(lr=0.01, momentum=0.937, weight_decay=5e-4, nesterov=True)
    optimizer=L(torch.optim.AdamW)(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05)

The parameter groups are the trainer's (:func:`param_groups`): :func:`build_optimizer` passes them
as ``params`` when it builds the call, with ``weight_decay`` on the decay group only. Swapping the
class (a new ``L(...)`` over the base's) replaces the whole call; ``--cfg-options
train.optimizer.lr=0.02`` changes one argument.

:class:`~detkit.engine.musgd.MuSGD` (YOLO26) gets the groups Ultralytics' ``build_optimizer`` gives it: a
``"muon"`` group of every 2-D and 4-D parameter (with decay), the others as above, and each group split
in two, the head's class branches at 3x the LR. ``optimizer="auto"`` is Ultralytics' choice, resolved by
the trainer (:func:`auto_optimizer`): MuSGD above 10,000 optimizer steps, else AdamW with a fitted LR.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from detkit.engine.musgd import MuSGD
from detkit.lazy import TARGET_KEY, L, call_text, instantiate
from detkit.schema import SettingError, default_of, target_product

__all__ = ["AUTO", "DEFAULT_OPTIMIZER", "auto_optimizer", "auto_optimizer_steps", "auto_settings", "build_optimizer",
           "check_optimizer_call", "class_branch_parameters", "optimizer_from_legacy", "param_groups"]

# The optimizer of a config that names none (YOLOv5's SGD).
DEFAULT_OPTIMIZER = L(torch.optim.SGD)(lr=0.01, momentum=0.937, weight_decay=5e-4, nesterov=True)

# ``train.optimizer="auto"``: the trainer picks the optimizer (:func:`auto_optimizer`).
AUTO = "auto"
# Ultralytics' optimizer=auto: MuSGD above this many optimizer steps, else AdamW.
AUTO_MUSGD_STEPS = 10_000
# Ultralytics' default.yaml weight decay, which optimizer=auto keeps.
AUTO_WEIGHT_DECAY = 5e-4
# Module names of a head's class branch (DecoupledHead, both branches): MuSGD trains them at this LR multiple.
CLASS_BRANCH_PARTS = ("cls_convs", "cls_preds")
MUSGD_CLASS_LR = 3.0


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
    """``node`` checked as the optimizer of a config: ``"auto"`` or a lazy call of a ``torch.optim.Optimizer``
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
    if node == AUTO:
        return node
    if not (isinstance(node, Mapping) and TARGET_KEY in node):
        raise SettingError(key, f"expected a lazy call of an optimizer class such as "
                                f"L(torch.optim.SGD)(lr=0.01, momentum=0.9), or \"auto\", got {node!r}")
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


def param_groups(model: nn.Module, weight_decay: float, matrices: bool = False) -> list[dict[str, Any]]:
    """Split trainable parameters into groups, in this order:

    0. ``"decay"``: weights of every non-norm module, with ``weight_decay``;
    1. ``"norm"``: weights of normalisation layers, decay 0;
    2. ``"bias"``: every bias, decay 0 (YOLOv5 warms this group's LR from a higher value).

    With ``matrices`` (MuSGD, as Ultralytics groups it), every 2-D and 4-D parameter (conv filters and
    linear weights, whatever their module) goes first to 3. ``"muon"``, with ``weight_decay`` and
    ``use_muon=True``; the three groups above hold the rest.

    Each group carries ``name``; parameters that do not require grad are left out; a parameter
    shared by several modules appears once.
    """
    decay, norm, bias, muon, seen = [], [], [], [], set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if matrices and p.ndim in (2, 4):
                muon.append(p)
            elif pname == "bias":
                bias.append(p)
            elif isinstance(module, NORM_TYPES):
                norm.append(p)
            else:
                decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": norm, "weight_decay": 0.0, "name": "norm"},
        {"params": bias, "weight_decay": 0.0, "name": "bias"},
    ]
    if matrices:
        groups.append({"params": muon, "weight_decay": weight_decay, "use_muon": True, "name": "muon"})
    return groups


def class_branch_parameters(model: nn.Module) -> set[int]:
    """``id`` of every parameter of a head's class branches: modules named in :data:`CLASS_BRANCH_PARTS`
    (``DecoupledHead``'s ``cls_convs`` and ``cls_preds``, the one-to-one branch's too: Ultralytics'
    ``cv3`` and ``one2one_cv3``)."""
    return {id(p) for name, p in model.named_parameters()
            if any(part in CLASS_BRANCH_PARTS for part in name.split(".")[:-1])}


def _split_class_branch(groups: list[dict[str, Any]], model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """Each group as two, as Ultralytics groups MuSGD's: the groups without the class branches' parameters,
    then copies holding those alone at ``MUSGD_CLASS_LR * lr`` (``class_branch=True``; same names)."""
    boosted = class_branch_parameters(model)
    rest = [{**g, "params": [p for p in g["params"] if id(p) not in boosted]} for g in groups]
    return rest + [{**g, "params": [p for p in g["params"] if id(p) in boosted], "lr": lr * MUSGD_CLASS_LR,
                    "class_branch": True} for g in groups]


def auto_optimizer_steps(images: int, batch: int, nominal_batch: int, epochs: int) -> int:
    """The optimizer steps of a run as Ultralytics counts them for ``optimizer=auto``:
    ``ceil(images / max(batch, nominal_batch)) * epochs`` (``batch``: all processes together)."""
    return math.ceil(images / max(batch, nominal_batch)) * epochs


def auto_settings(node: Any, images: int, batch: int, nominal_batch: int, epochs: int,
                  num_classes: int) -> dict[str, int] | None:
    """What ``optimizer="auto"`` depends on, as :func:`auto_optimizer`'s arguments (the trainer keeps them
    in its checkpoints, so that a resumed run rebuilds the same optimizer); None for any other ``node``."""
    if node != AUTO:
        return None
    return {"optimizer_steps": auto_optimizer_steps(images, batch, nominal_batch, epochs), "num_classes": num_classes}


def auto_optimizer(optimizer_steps: int, num_classes: int) -> Any:
    """Ultralytics' ``optimizer=auto``: the lazy call it stands for in a run of ``optimizer_steps``
    (:func:`auto_optimizer_steps`) steps training ``num_classes`` classes.

    Above 10,000 steps ``MuSGD(lr=0.01, momentum=0.9, nesterov=True)``, else ``AdamW(lr=round(0.002 * 5 /
    (4 + num_classes), 6), betas=(0.9, 0.999))``; weight decay 5e-4 (``default.yaml``'s) either way.
    """
    if optimizer_steps > AUTO_MUSGD_STEPS:
        return L(MuSGD)(lr=0.01, momentum=0.9, weight_decay=AUTO_WEIGHT_DECAY, nesterov=True, muon=0.2, sgd=1.0)
    lr_fit = round(0.002 * 5 / (4 + num_classes), 6)
    return L(torch.optim.AdamW)(lr=lr_fit, betas=(0.9, 0.999), weight_decay=AUTO_WEIGHT_DECAY)


def build_optimizer(model: nn.Module, optimizer: Mapping[str, Any] = DEFAULT_OPTIMIZER,
                    weight_decay_scale: float = 1.0) -> torch.optim.Optimizer:
    """Build the optimizer a lazy call describes over :func:`param_groups` of ``model``.

    Args:
        optimizer: a lazy call of a ``torch.optim`` class (``L(torch.optim.SGD)(lr=0.01, momentum=0.9)``);
            its ``weight_decay`` (the class's default when absent) goes to the ``"decay"`` group only
            (and the ``"muon"`` group of a :class:`~detkit.engine.musgd.MuSGD`, whose groups are split into
            class branches at 3x the LR and the rest). ``"auto"`` is the trainer's to resolve
            (:func:`auto_optimizer`).
        weight_decay_scale: multiplies ``weight_decay`` (the trainer passes
            ``batch * accumulate / nominal_batch`` as YOLOv5 does).

    Every group stores ``initial_lr`` and ``initial_momentum`` (SGD's momentum, Adam's beta1) for the schedules.

    Raises:
        ValueError: the model has no trainable parameters, or ``optimizer`` is ``"auto"``.
    """
    if optimizer == AUTO:
        raise ValueError('optimizer "auto" is resolved by the trainer (auto_optimizer) before build_optimizer')
    target = optimizer[TARGET_KEY]
    args = {k: v for k, v in optimizer.items() if k != TARGET_KEY}
    weight_decay = args.pop("weight_decay", None)
    if weight_decay is None:
        weight_decay = default_of(target, "weight_decay")
    product = target_product(target)
    musgd = product is not None and issubclass(product, MuSGD)
    groups = param_groups(model, float(weight_decay) * weight_decay_scale, matrices=musgd)
    if musgd:
        lr = args.get("lr")
        groups = _split_class_branch(groups, model, float(lr if lr is not None else default_of(target, "lr")))
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    opt: torch.optim.Optimizer = instantiate(L(target)(**args), "train.optimizer", params=groups)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
        momentum = _momentum_of(g)
        if momentum is not None:
            g["initial_momentum"] = momentum
    return opt
