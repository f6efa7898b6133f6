"""Conv + BatchNorm fusion for inference: one function, :func:`fused_copy`, used by every predicting path.

    from detkit.models.fuse import fused_copy

    predictor = fused_copy(model)   # a deep copy in eval mode, no BatchNorm left; ``model`` untouched
    dets = predictor.predict(batch)

In eval mode a BatchNorm after a convolution is an affine map per output channel, so it folds into the
convolution's weight and bias (torch's own :func:`torch.nn.utils.fusion.fuse_conv_bn_eval` does the
arithmetic); the BatchNorm becomes ``nn.Identity``. The outputs equal the unfused model's within fp32
rounding, one kernel less per conv unit runs. What is fused, found by structure rather than by class:

* a module's ``conv`` / ``bn`` attribute pair (every :class:`~detkit.models.layers.ConvBNAct`: plain,
  grouped, depthwise, the units of depthwise-separable pairs, C2f / C3k2 / C3 / attention blocks, SPPF,
  the heads' branch convs), and ``conv1`` / ``bn1``, ``conv2`` / ``bn2``, ... (ResNet's blocks and stem);
* a ``Conv2d`` directly followed by a ``BatchNorm2d`` in an ``nn.Sequential`` (ResNet's downsample).

A conv shared by several units (RTMDet's head: one conv per branch position shared across levels, a
BatchNorm per level) is fused once per unit into that unit's own new conv, so a level's fusion never alters
another level's weights. A BatchNorm with no conv before it (none in detkit's models) is left as it is.

The copy runs eager: a ``torch.compile`` done in place on the original (``module.compile()``) is not carried
over, since its compiled call would run the original's unfused weights.

A head with two prediction branches (YOLOv10's and YOLO26's one-to-one head beside its one-to-many
one) computes both in every forward, while inference reads one (``head.branch``). The copy keeps only
that branch's layers (``prune_branches=True``, the default;
:meth:`~detkit.models.heads.dense_head.DenseHead.keep_branches_`): its forward skips the other branch
(YOLO26n at 640 px: about a seventh of the fused network's time), its decoded outputs and detections
equal the unpruned copy's, and its raw maps hold the kept branch only. The losses of a dual-branch head
need both branches: ``prune_branches=False`` for a copy whose losses are computed (the trainer's
evaluation with val losses). To predict from the other branch, set ``head.branch`` before copying
(``--cfg-options model.head.branch=one2many``).
"""

from __future__ import annotations

import copy
import re
from typing import TypeVar

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from detkit.models.heads.dense_head import DenseHead

__all__ = ["fuse_conv_bn_", "fused_copy"]

M = TypeVar("M", bound=nn.Module)

_PAIR = re.compile(r"bn(\d*)")


def fused_copy(model: M, *, prune_branches: bool = True) -> M:
    """A deep copy of ``model`` in eval mode with every Conv2d + BatchNorm2d pair fused (see the module docs).

    The original (its parameters, BatchNorm buffers, mode and ``requires_grad``) is not touched and stays
    trainable. The copy is for inference only: it has no BatchNorm left to train.

    Args:
        model: any module; its dense heads (:class:`~detkit.models.heads.dense_head.DenseHead`) are found below it.
        prune_branches: drop the layers of every head branch inference does not read (a dual-branch
            head's other branch: see the module docs); False keeps them (the copy's losses computable).

    Shapes: the copy maps the same inputs to the same decoded outputs and detections as ``model.eval()``
    (within fp32 rounding); its raw maps are ``model``'s, or with pruned branches the kept branch's
    channels of them.
    """
    fused = copy.deepcopy(model)
    for module in fused.modules():  # a compile done in place would call the original's forward
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None
    fused.eval()
    if prune_branches:
        for module in list(fused.modules()):
            if isinstance(module, DenseHead):
                module.keep_branches_((module.branch,))
    fuse_conv_bn_(fused)
    return fused


def fuse_conv_bn_(model: nn.Module) -> int:
    """Fuse every Conv2d + BatchNorm2d pair below ``model`` in place; ``model`` must be in eval mode.

    Returns:
        The number of BatchNorms folded away.

    Raises:
        ValueError: ``model`` (or a module below it) is in training mode: the batch statistics of a
            training-mode BatchNorm cannot be folded.
    """
    if any(m.training for m in model.modules()):
        raise ValueError("fuse_conv_bn_ needs a model in eval mode (call .eval() first, or use fused_copy)")
    count = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            count += _fuse_sequential(module)
        for name, child in list(module.named_children()):
            match = _PAIR.fullmatch(name)
            if not match or not isinstance(child, nn.BatchNorm2d):
                continue
            conv = getattr(module, f"conv{match.group(1)}", None)
            if isinstance(conv, nn.Conv2d) and conv.out_channels == child.num_features:
                setattr(module, f"conv{match.group(1)}", fuse_conv_bn_eval(conv, child))
                setattr(module, name, nn.Identity().eval())
                count += 1
    return count


def _fuse_sequential(seq: nn.Sequential) -> int:
    """Fold each ``BatchNorm2d`` that directly follows a ``Conv2d`` in ``seq`` (positions kept: Identity)."""
    count = 0
    names = list(seq._modules)
    for first, second in zip(names, names[1:]):
        conv, bn = seq._modules[first], seq._modules[second]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.out_channels == bn.num_features:
            seq._modules[first] = fuse_conv_bn_eval(conv, bn)
            seq._modules[second] = nn.Identity().eval()
            count += 1
    return count
