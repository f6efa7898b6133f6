"""Darknet ``.weights`` files: read them into detkit modules, and write them.

File layout (AlexeyAB/darknet ``parser.c``):

* header: ``major, minor, revision`` as int32, then ``seen`` (images trained on) as int64 when
  ``major * 10 + minor >= 2`` (int32 in older files);
* then, for every convolutional layer in ``.cfg`` order, float32 arrays:
  with batch-norm ``bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight``;
  without batch-norm ``conv.bias, conv.weight``.

``yolov4.cfg`` has 110 convs; ``yolov4.conv.137`` holds those of its first 137 layers: all 72 of
CSPDarknet53 plus the 20 of the neck's SPP and top-down path; :func:`load_darknet_weights` loads as many convs as the
file holds and reports the count. :func:`darknet_convs` lists a model's convs in Darknet order, for
``CSPDarknet`` alone or for a ``Detector`` of CSPDarknet + PAN + YOLOHead (the YOLOv4 layout,
where each level's head convs come before the next bottom-up step).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from detkit.errors import CheckpointError
from detkit.models.layers import ConvBNAct

__all__ = ["DarknetHeader", "darknet_convs", "load_darknet_weights", "save_darknet_weights"]


@dataclass(frozen=True)
class DarknetHeader:
    major: int = 0
    minor: int = 2
    revision: int = 5
    seen: int = 0

    @property
    def seen_is_int64(self) -> bool:
        return self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000


def darknet_convs(model: nn.Module) -> list[nn.Module]:
    """Conv units (``ConvBNAct`` or bias ``nn.Conv2d``) of ``model`` in Darknet layer order.

    Accepts a ``CSPDarknet`` or a ``Detector`` of ``CSPDarknet`` + ``PAN`` + ``YOLOHead``.
    """
    from detkit.models.backbones.cspdarknet import CSPDarknet
    from detkit.models.necks.pan import PAN

    if isinstance(model, CSPDarknet):
        return model.darknet_convs()
    backbone, neck, head = (getattr(model, k, None) for k in ("backbone", "neck", "head"))
    if not isinstance(backbone, CSPDarknet) or not isinstance(neck, PAN) or head is None:
        raise ValueError(
            f"Darknet layer order is known for CSPDarknet and for Detector(CSPDarknet, PAN, "
            f"YOLOHead); got {type(model).__name__}"
        )

    def units(m: nn.Module) -> list[nn.Module]:
        return [u for u in m.modules() if isinstance(u, ConvBNAct)]

    convs = backbone.darknet_convs() + units(neck.top)
    for k in range(len(neck.reduce)):
        convs += units(neck.reduce[k]) + units(neck.lateral[k]) + units(neck.td_convs[k])
    convs += [head.convs[0], head.preds[0]]
    for k in range(len(neck.down)):
        convs += units(neck.down[k]) + units(neck.bu_convs[k])
        convs += [head.convs[k + 1], head.preds[k + 1]]
    return convs


def _tensors(unit: nn.Module) -> list[torch.Tensor]:
    """The tensors of one conv unit in file order."""
    if isinstance(unit, ConvBNAct):
        conv, bn = unit.conv, unit.bn
    elif isinstance(unit, nn.Conv2d):
        conv, bn = unit, None
    else:
        raise ValueError(f"expected ConvBNAct or nn.Conv2d, got {type(unit).__name__}")
    if isinstance(bn, nn.BatchNorm2d):
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("a batch-norm without running statistics has no Darknet layout")
        return [bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]
    if conv.bias is None:
        raise ValueError("a conv without batch-norm must have a bias to match Darknet's layout")
    return [conv.bias, conv.weight]


def _read_header(f) -> DarknetHeader:
    head = np.fromfile(f, dtype=np.int32, count=3)
    if head.size != 3:
        raise CheckpointError(f"{getattr(f, 'name', 'file')}: too short for a Darknet header (3 int32 + seen)")
    major, minor, revision = (int(v) for v in head)
    probe = DarknetHeader(major, minor, revision)
    seen = np.fromfile(f, dtype=np.int64 if probe.seen_is_int64 else np.int32, count=1)
    return DarknetHeader(major, minor, revision, int(seen[0]) if seen.size else 0)


def load_darknet_weights(
    convs: Sequence[nn.Module], path: str | os.PathLike, *, strict: bool = False
) -> tuple[DarknetHeader, int]:
    """Copy weights from a Darknet file into ``convs`` (Darknet order, see :func:`darknet_convs`).

    Args:
        convs: conv units to fill, in file order.
        path: the ``.weights`` file.
        strict: require the file to hold exactly these convs (else load the prefix it holds,
            as for ``yolov4.conv.137``).

    Returns:
        ``(header, number of convs loaded)``.
    """
    with open(path, "rb") as f:
        header = _read_header(f)
        data = np.fromfile(f, dtype=np.float32)
    offset, loaded = 0, 0
    for unit in convs:
        tensors = _tensors(unit)
        need = sum(t.numel() for t in tensors)
        if offset + need > data.size:
            break
        with torch.no_grad():
            for t in tensors:
                n = t.numel()
                t.copy_(torch.from_numpy(data[offset : offset + n].copy()).view_as(t))
                offset += n
        loaded += 1
    if strict and (loaded != len(convs) or offset != data.size):
        raise CheckpointError(
            f"{path}: holds {data.size} floats; the {len(convs)} convs need "
            f"{sum(sum(t.numel() for t in _tensors(u)) for u in convs)} (loaded {loaded} convs)"
        )
    return header, loaded


def save_darknet_weights(
    convs: Sequence[nn.Module], path: str | os.PathLike, header: DarknetHeader = DarknetHeader()
) -> None:
    """Write ``convs`` (Darknet order) as a Darknet ``.weights`` file."""
    with open(path, "wb") as f:
        np.array([header.major, header.minor, header.revision], dtype=np.int32).tofile(f)
        seen_dtype = np.int64 if header.seen_is_int64 else np.int32
        np.array([header.seen], dtype=seen_dtype).tofile(f)
        for unit in convs:
            for t in _tensors(unit):
                t.detach().cpu().float().numpy().ravel().tofile(f)
