"""Weights into a model: from a detkit checkpoint (its EMA weights when present), a plain state_dict,
a torchvision ResNet backbone or a Darknet ``.weights`` file.

Fine-tuning (:func:`load_weights` without ``strict``) loads what fits and reports the rest;
evaluation, inference and export (``strict=True``) refuse weights that do not fill the whole model,
naming the tensors and shapes that differ (:func:`weights_misfit`, which resuming uses too).
Files are read by :func:`detkit.engine.checkpoint.load_checkpoint` (``weights_only=True``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from detkit.engine.checkpoint import load_checkpoint
from detkit.errors import CheckpointError

__all__ = ["load_weights", "weights_differences", "weights_misfit"]

# Tensors named per kind in a strict-loading error.
_SHOWN = 4


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def weights_misfit(path: str | os.PathLike, own: Mapping[str, torch.Tensor],
                   state_dict: Mapping[str, torch.Tensor], context: str = "") -> CheckpointError | None:
    """The error to raise when ``state_dict`` (read from ``path``) does not fill a model with ``own``
    tensors exactly: one line, after ``context`` (``"cannot resume: "``), naming the tensors and
    shapes that differ and ``load_from`` (a tool's ``--load-from``) for fine-tuning; None if it fits."""
    parts = weights_differences(own, state_dict)
    if not parts:
        return None
    return CheckpointError("{context}{path} does not fit the model: {parts}. It was trained with another config "
                           "(class count, width, head); pass that config (or use it with {load_from} to fine-tune)",
                           values={"context": context, "path": os.fspath(path), "parts": "; ".join(parts)})


def weights_differences(own: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """How ``state_dict`` fails to fill a model with ``own`` tensors exactly: up to three phrases
    (tensors of another shape, model tensors missing, tensors the model lacks); empty if it fits."""
    mismatched = sorted(k for k, v in state_dict.items() if k in own and own[k].shape != v.shape)
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    def listed(keys: list[str], show: Callable[[str], str]) -> str:
        more = f", ... {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
        return ", ".join(show(k) for k in keys[:_SHOWN]) + more

    parts = []
    if mismatched:
        parts.append(f"{len(mismatched)} tensor(s) of another shape (" + listed(
            mismatched, lambda k: f"{k}: checkpoint {_shape(state_dict[k])} vs model {_shape(own[k])}") + ")")
    if missing:
        parts.append(f"{len(missing)} model tensor(s) missing (" + listed(missing, str) + ")")
    if unexpected:
        parts.append(f"{len(unexpected)} tensor(s) the model does not have (" + listed(unexpected, str) + ")")
    return parts


def _load_matching(module: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str = "",
                   strict: bool = False) -> dict[str, list[str]]:
    """Load the entries whose name and shape match; report the rest (``strict``: raise
    :class:`CheckpointError` instead, before loading anything, unless every tensor matches)."""
    own = module.state_dict()
    if strict and (misfit := weights_misfit(path, own, state_dict)):
        raise misfit
    usable = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    mismatched = [k for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    module.load_state_dict(usable, strict=False)
    return {
        "loaded": sorted(usable),
        "missing": sorted(k for k in own if k not in usable),
        "unexpected": sorted(k for k in state_dict if k not in own),
        "shape_mismatch": sorted(mismatched),
    }


def load_weights(model: nn.Module, path: str | os.PathLike, prefer_ema: bool = True,
                 strict: bool = False) -> dict[str, list[str]]:
    """Load weights only (no optimizer, no schedule) into ``model``.

    Accepts a detkit checkpoint (its EMA weights when present and ``prefer_ema``, else ``model``),
    a plain ``state_dict`` of the whole model, a torchvision ResNet ``state_dict`` (loaded into
    ``model.backbone`` via ``backbone.load_torchvision``), or a Darknet ``.weights`` file
    (through ``detkit.models.darknet.load_darknet_weights`` when that module exists). Entries whose
    shapes differ (e.g. another class count) are skipped and reported, for fine-tuning.

    With ``strict`` (evaluation, inference, export: a model that must be the trained one) the
    weights must fill the whole model: a tensor of another shape, a model tensor the file lacks
    or a tensor the model does not have raises :class:`CheckpointError` listing them (and their
    shapes) before anything is loaded; a backbone-only file (torchvision ResNet) is refused too,
    and a Darknet file must hold exactly the model's convolutions.

    Returns:
        ``{"loaded", "missing", "unexpected", "shape_mismatch"}`` lists of parameter names.

    Raises:
        CheckpointError: unreadable file, or (``strict``) weights that do not fill the model.
    """
    path = os.fspath(path)
    if path.endswith(".weights"):
        try:
            from detkit.models.darknet import darknet_convs, load_darknet_weights
        except ImportError as e:
            raise ValueError(f"{path}: Darknet .weights need detkit.models.darknet, which is not available") from e
        if not os.path.isfile(path):
            raise CheckpointError(f"Darknet weights not found: {path}")
        _, count = load_darknet_weights(darknet_convs(model), path, strict=strict)
        return {"loaded": [f"<{count} darknet convs>"], "missing": [], "unexpected": [], "shape_mismatch": []}
    ckpt = load_checkpoint(path)
    if "model" in ckpt and isinstance(ckpt["model"], Mapping):
        ema = ckpt.get("ema")
        sd = ema["module"] if prefer_ema and ema else ckpt["model"]
        return _load_matching(model, sd, path, strict)
    if "state_dict" in ckpt and isinstance(ckpt["state_dict"], Mapping):
        ckpt = ckpt["state_dict"]
    sd = {k.removeprefix("module."): v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    backbone: Any = getattr(model, "backbone", None)
    if any(k.startswith("layer1.") for k in sd) and hasattr(backbone, "load_torchvision"):
        if strict:
            raise CheckpointError("{path} holds backbone weights only (a torchvision ResNet state_dict), not a "
                                  "trained detector; train from it with {load_from}", values={"path": path})
        backbone.load_torchvision(sd)
        own = sorted(f"backbone.{k}" for k in sd if not k.startswith("fc."))
        return {"loaded": own, "missing": [], "unexpected": sorted(k for k in sd if k.startswith("fc.")),
                "shape_mismatch": []}
    report = _load_matching(model, sd, path, strict)
    if not report["loaded"]:
        raise CheckpointError(
            f"{path}: no parameter matched the model; expected a detkit checkpoint, a model state_dict, "
            "a torchvision ResNet state_dict or a Darknet .weights file"
        )
    return report
