"""Ultralytics YOLOv8 detection weights -> detkit's ``configs/yolov8{n,s,m,l,x}_tal.py`` models.

Pure functions over ``state_dict`` key names and tensors; nothing here imports ultralytics
(``tools/convert_weights.py`` unpickles the checkpoint and hands its ``state_dict`` here).

Ultralytics' ``yolov8.yaml`` numbers its layers 0-22. Layers 0-21 are the backbone and the PAN
(:data:`YOLOV8_LAYERS`; inside a C2f block Ultralytics' ``m.{k}.cv{j}`` bottleneck convs are
detkit's ``blocks.{k}.conv{j}``; every other name below a layer is the same on both sides). Layer
22 is the ``Detect`` head: per level ``i``, ``cv2.{i}`` (two 3x3 convs, then a 1x1 conv to
``4 * reg_max`` bin logits) is detkit's ``head.box_convs.{i}.{0,1}`` + ``head.box_preds.{i}``, and
``cv3.{i}`` (the same for class logits) is ``head.cls_convs.{i}.{0,1}`` + ``head.cls_preds.{i}``.
``dfl.conv.weight`` is Ultralytics' fixed DFL projection ``arange(reg_max)``, which detkit's
``DFLCoder`` holds as a constant: it is checked and dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from detkit.errors import CheckpointError
from detkit.models.backbones.cspdarknet import YOLOV8_SCALES, scale_channels

__all__ = [
    "DEFAULT_NUM_CLASSES",
    "DEFAULT_REG_MAX",
    "DFL_PROJECTION_KEY",
    "YOLOV8_DETECT_LAYER",
    "YOLOV8_LAYERS",
    "ConversionError",
    "ConvertedWeights",
    "UltralyticsModel",
    "check_dfl_projection",
    "class_name_list",
    "convert_yolov8",
    "detkit_to_ultralytics_key",
    "required_overrides",
    "to_ultralytics_state_dict",
    "ultralytics_to_detkit_key",
    "yolov8_config",
    "yolov8_scale",
]

# Ultralytics yolov8.yaml layer index -> detkit module path (layers 10, 11, 13, 14, 17, 20 are
# upsample / concat, without parameters).
YOLOV8_LAYERS: dict[int, str] = {
    0: "backbone.stem",
    1: "backbone.stages.1.0", 2: "backbone.stages.1.1",
    3: "backbone.stages.2.0", 4: "backbone.stages.2.1",
    5: "backbone.stages.3.0", 6: "backbone.stages.3.1",
    7: "backbone.stages.4.0", 8: "backbone.stages.4.1", 9: "backbone.stages.4.2",
    12: "neck.td_blocks.0", 15: "neck.td_blocks.1",
    16: "neck.down.0", 18: "neck.bu_blocks.0",
    19: "neck.down.1", 21: "neck.bu_blocks.1",
}
YOLOV8_DETECT_LAYER = 22
DFL_PROJECTION_KEY = f"model.{YOLOV8_DETECT_LAYER}.dfl.conv.weight"
DEFAULT_NUM_CLASSES = 80  # what configs/yolov8*_tal.py build (COCO)
DEFAULT_REG_MAX = 16  # their DFLCoder(reg_max=16)

# Ultralytics Detect branch -> detkit head parts: (3x3 convs, final 1x1 conv).
_HEAD_BRANCHES = {"cv2": ("box_convs", "box_preds"), "cv3": ("cls_convs", "cls_preds")}
_BRANCH_CONVS = 2  # YOLOv8's Detect: two 3x3 Conv-BN-SiLU per branch before the 1x1 prediction
# Heads of other tasks add these parts to Detect; their checkpoints do not convert.
_OTHER_TASK_PARTS = {"cv4": "segmentation masks, pose keypoints or OBB angles", "proto": "segmentation masks",
                     "cv5": "keypoint visibility", "one2one_cv2": "an end-to-end (NMS-free) one-to-one head"}
_STEM_KEY = "model.0.conv.weight"
_LAYER_RE = re.compile(r"model\.(\d+)\.(.+)")
# What may follow "model.{i}." in each YOLOv8 layer (Conv-BN-SiLU units: conv.weight and bn.*).
_UNIT = r"(conv\.weight|bn\.(weight|bias|running_mean|running_var|num_batches_tracked))"
_LAYER_KINDS = {"Conv": (re.compile(_UNIT), (0, 1, 3, 5, 7, 16, 19)),
                "C2f": (re.compile(rf"(cv[12]|m\.\d+\.cv[12])\.{_UNIT}"), (2, 4, 6, 8, 12, 15, 18, 21)),
                "SPPF": (re.compile(rf"cv[12]\.{_UNIT}"), (9,))}
_LAYER_KIND = {layer: (kind, pattern) for kind, (pattern, layers) in _LAYER_KINDS.items() for layer in layers}


class ConversionError(CheckpointError):
    """Weights that are not a YOLOv8 detection model detkit can convert (the message says why)."""


# ----------------------------------------------------------------------------------------------
# key names
# ----------------------------------------------------------------------------------------------


def ultralytics_to_detkit_key(key: str) -> str:
    """Ultralytics YOLOv8 ``state_dict`` key -> detkit :class:`Detector` key.

    ``model.{i}.<rest>`` for layers 0-21 -> :data:`YOLOV8_LAYERS` path (C2f ``m.{k}.cv{j}`` ->
    ``blocks.{k}.conv{j}``); ``model.22.cv2.{i}.{0,1}.<rest>`` -> ``head.box_convs.{i}.{0,1}.<rest>``,
    ``model.22.cv2.{i}.2.<p>`` -> ``head.box_preds.{i}.<p>`` (``cv3``: ``cls_convs`` / ``cls_preds``).

    Raises:
        ConversionError: for a key outside YOLOv8's detection layout (the DFL projection included:
            it has no detkit counterpart; see :func:`check_dfl_projection`).
    """
    match = _LAYER_RE.fullmatch(key)
    layer = int(match.group(1)) if match else -1
    if match is not None and layer in YOLOV8_LAYERS:
        rest = re.sub(r"^m\.(\d+)\.cv(\d)\.", r"blocks.\1.conv\2.", match.group(2))
        return f"{YOLOV8_LAYERS[layer]}.{rest}"
    if match is not None and layer == YOLOV8_DETECT_LAYER:
        head = re.fullmatch(r"(cv[23])\.(\d+)\.(\d+)\.(.+)", match.group(2))
        if head is not None:
            convs, preds = _HEAD_BRANCHES[head.group(1)]
            level, part, rest = head.group(2), int(head.group(3)), head.group(4)
            if part < _BRANCH_CONVS and rest.startswith(("conv.", "bn.")):
                return f"head.{convs}.{level}.{part}.{rest}"
            if part == _BRANCH_CONVS and rest in ("weight", "bias"):
                return f"head.{preds}.{level}.{rest}"
    raise ConversionError(f"Ultralytics key {key!r} has no place in detkit's YOLOv8 model")


def detkit_to_ultralytics_key(key: str) -> str:
    """detkit YOLOv8 :class:`Detector` key -> Ultralytics key (the inverse of
    :func:`ultralytics_to_detkit_key`).

    Raises:
        ConversionError: for a key outside the YOLOv8 layout.
    """
    head = re.fullmatch(r"head\.(box|cls)_(convs|preds)\.(\d+)\.(.+)", key)
    if head is not None:
        branch = "cv2" if head.group(1) == "box" else "cv3"
        if head.group(2) == "preds":
            return f"model.{YOLOV8_DETECT_LAYER}.{branch}.{head.group(3)}.{_BRANCH_CONVS}.{head.group(4)}"
        return f"model.{YOLOV8_DETECT_LAYER}.{branch}.{head.group(3)}.{head.group(4)}"
    # Longest path first: "backbone.stages.1.1" must not take "backbone.stages.1.10...".
    for layer, path in sorted(YOLOV8_LAYERS.items(), key=lambda item: -len(item[1])):
        if key.startswith(path + "."):
            rest = re.sub(r"^blocks\.(\d+)\.conv(\d)\.", r"m.\1.cv\2.", key[len(path) + 1:])
            return f"model.{layer}.{rest}"
    raise ConversionError(f"detkit key {key!r} has no place in Ultralytics' YOLOv8 model")


# ----------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------


def _check_layout(state_dict: Mapping[str, Tensor]) -> None:
    """ConversionError unless the keys are YOLOv8's detection layout (layers 0-22, legacy Detect)."""
    if _STEM_KEY not in state_dict:
        raise ConversionError(f"no {_STEM_KEY!r}: not an Ultralytics YOLO model's weights")
    layers = {int(m.group(1)) for k in state_dict if (m := _LAYER_RE.fullmatch(k))}
    expected = set(YOLOV8_LAYERS) | {YOLOV8_DETECT_LAYER}
    head_prefix = f"model.{YOLOV8_DETECT_LAYER}."
    for part, what in _OTHER_TASK_PARTS.items():
        if any(k.startswith(head_prefix + part + ".") for k in state_dict):
            raise ConversionError(f"the head has {part!r} weights ({what}): only YOLOv8 detection models convert")
    if layers != expected:
        diff = [f"{what} {sorted(layers)}" for what, layers in
                (("unexpected layers", layers - expected), ("missing layers", expected - layers)) if layers]
        raise ConversionError(
            f"not YOLOv8's layer layout ({', '.join(diff)}; YOLOv8 has weights in layers 0-9, 12, 15, 16, 18, "
            "19, 21 and its Detect head 22): YOLOv5u, YOLOv9, YOLO11, P2/P6 variants and custom yamls do not "
            "convert")
    for key in state_dict:
        match = _LAYER_RE.fullmatch(key)
        kind, pattern = _LAYER_KIND.get(int(match.group(1)), (None, None)) if match else (None, None)
        if match is not None and pattern is not None and not pattern.fullmatch(match.group(2)):
            raise ConversionError(f"{key!r} is not part of YOLOv8's layer {match.group(1)} ({kind}): not a "
                                  "YOLOv8 model (YOLOv9 and custom yamls do not convert)")
    if any(re.match(rf"model\.{YOLOV8_DETECT_LAYER}\.cv3\.\d+\.0\.0\.", k) for k in state_dict):
        raise ConversionError("the Detect head's class branch uses depthwise convs (YOLO11 and later), "
                              "not YOLOv8's two 3x3 convs")
    if DFL_PROJECTION_KEY not in state_dict:
        raise ConversionError(f"no {DFL_PROJECTION_KEY!r}: the Detect head has no DFL box regression")


def check_dfl_projection(weight: Tensor) -> int:
    """The DFL projection must be ``arange(reg_max)`` shaped ``(1, reg_max, 1, 1)``; returns reg_max.

    Raises:
        ConversionError: any other shape or value (detkit's ``DFLCoder`` always integrates over
            ``0..reg_max-1``, so other weights would change the boxes).
    """
    if weight.dim() != 4 or weight.shape[0] != 1 or weight.shape[2:] != (1, 1) or weight.shape[1] < 2:
        raise ConversionError(f"{DFL_PROJECTION_KEY} has shape {tuple(weight.shape)}, expected (1, reg_max, 1, 1)")
    reg_max = int(weight.shape[1])
    expected = torch.arange(reg_max, dtype=torch.float32)
    if not torch.equal(weight.detach().float().flatten(), expected):
        raise ConversionError(f"{DFL_PROJECTION_KEY} is not arange({reg_max}) (got {weight.flatten()[:4].tolist()}"
                              "...): detkit's DFLCoder integrates over fixed bins 0..reg_max-1")
    return reg_max


def yolov8_scale(state_dict: Mapping[str, Tensor]) -> str:
    """YOLOv8's scale (``n``/``s``/``m``/``l``/``x``) from the stem's width (16, 32, 48, 64, 80).

    Raises:
        ConversionError: no stem, or a width no YOLOv8 scale has.
    """
    if _STEM_KEY not in state_dict:
        raise ConversionError(f"no {_STEM_KEY!r}: not an Ultralytics YOLO model's weights")
    width = int(state_dict[_STEM_KEY].shape[0])
    by_width = {scale_channels(min(64, s.max_channels or 64), s.widen_factor): name
                for name, s in YOLOV8_SCALES.items()}
    if width not in by_width:
        accepted = ", ".join(f"{w} ({n})" for w, n in sorted(by_width.items()))
        raise ConversionError(f"stem width {width} is not a YOLOv8 scale's (accepted: {accepted})")
    return by_width[width]


def class_name_list(names: Mapping[int, str] | Sequence[str] | None, num_classes: int) -> list[str]:
    """Ultralytics' ``model.names`` (``{index: name}`` or a list) as a list of ``num_classes`` names.

    Raises:
        ConversionError: names that are not exactly one per class index ``0..num_classes-1``.
    """
    if names is None:
        return [str(i) for i in range(num_classes)]
    if isinstance(names, Mapping):
        by_index = {int(k): str(v) for k, v in names.items()}
        if sorted(by_index) != list(range(len(by_index))):
            raise ConversionError(f"class names are not indexed 0..{len(by_index) - 1}: {sorted(by_index)[:8]}")
        listed = [by_index[i] for i in range(len(by_index))]
    elif isinstance(names, Sequence) and not isinstance(names, str):
        listed = [str(n) for n in names]
    else:
        raise ConversionError(f"class names must be a dict or a list, got {type(names).__name__}")
    if len(listed) != num_classes:
        raise ConversionError(f"{len(listed)} class names for a head with {num_classes} classes")
    return listed


# ----------------------------------------------------------------------------------------------
# conversion
# ----------------------------------------------------------------------------------------------


@dataclass
class ConvertedWeights:
    """A converted model: detkit ``state_dict`` (fp32) and what is needed to build its config.

    Attributes:
        state_dict: detkit keys -> tensors (floating tensors fp32, BN counters as they were).
        scale: YOLOv8 scale (``n``/``s``/``m``/``l``/``x``).
        num_classes: C of the head.
        reg_max: DFL bins per side.
        class_names: C names.
        source_dtype: dtype of the source's floating tensors (``torch.float16`` for Ultralytics'
            checkpoints).
    """

    state_dict: dict[str, Tensor]
    scale: str
    num_classes: int
    reg_max: int
    class_names: list[str]
    source_dtype: torch.dtype


@dataclass
class UltralyticsModel:
    """What ``tools/convert_weights.py`` reads from an unpickled Ultralytics checkpoint.

    Attributes:
        state_dict: the model's tensors under Ultralytics' names (``model.{i}....``).
        names: ``model.names`` (``{index: name}``), or None.
        entry: the checkpoint entry the model came from (``"ema"`` or ``"model"``).
        version: the ultralytics version that saved it, when recorded.
        yaml_file: the model yaml it was built from, when recorded (``yolov8s.yaml``).
    """

    state_dict: Mapping[str, Tensor]
    names: Mapping[int, str] | Sequence[str] | None
    entry: str
    version: str | None = None
    yaml_file: str | None = None


def convert_yolov8(state_dict: Mapping[str, Tensor],
                   names: Mapping[int, str] | Sequence[str] | None = None) -> ConvertedWeights:
    """Ultralytics YOLOv8 detection ``state_dict`` (+ ``model.names``) -> detkit weights.

    Every key is renamed (:func:`ultralytics_to_detkit_key`) and every floating tensor cast to
    fp32 (Ultralytics saves fp16; fp16 -> fp32 is exact); the DFL projection is checked and dropped.

    Raises:
        ConversionError: another layout or task, a DFL projection other than ``arange``, class
            names that do not match the head, non-finite weights.
    """
    _check_layout(state_dict)
    reg_max = check_dfl_projection(state_dict[DFL_PROJECTION_KEY])
    num_classes = int(state_dict[f"model.{YOLOV8_DETECT_LAYER}.cv3.0.{_BRANCH_CONVS}.weight"].shape[0])
    box_params = int(state_dict[f"model.{YOLOV8_DETECT_LAYER}.cv2.0.{_BRANCH_CONVS}.weight"].shape[0])
    if box_params != 4 * reg_max:
        raise ConversionError(f"the box branch predicts {box_params} values per prior, expected 4 * reg_max "
                              f"= {4 * reg_max}")
    converted: dict[str, Tensor] = {}
    dtypes = set()
    for key, value in state_dict.items():
        if key == DFL_PROJECTION_KEY:
            continue
        if not isinstance(value, Tensor):
            raise ConversionError(f"{key!r} is a {type(value).__name__}, not a tensor")
        if value.is_floating_point():
            dtypes.add(value.dtype)
            if not torch.isfinite(value).all():
                raise ConversionError(f"{key!r} holds non-finite values")
            value = value.detach().to(torch.float32)
        converted[ultralytics_to_detkit_key(key)] = value.detach().clone()
    return ConvertedWeights(
        state_dict=converted, scale=yolov8_scale(state_dict), num_classes=num_classes, reg_max=reg_max,
        class_names=class_name_list(names, num_classes),
        source_dtype=max(dtypes, key=lambda d: torch.finfo(d).bits) if dtypes else torch.float32,
    )


def to_ultralytics_state_dict(state_dict: Mapping[str, Tensor], reg_max: int = DEFAULT_REG_MAX,
                              dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """detkit YOLOv8 ``state_dict`` -> Ultralytics names, with the DFL projection added back
    (floating tensors cast to ``dtype`` when given, e.g. fp16 as Ultralytics saves them)."""
    out = {}
    for key, value in state_dict.items():
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[detkit_to_ultralytics_key(key)] = value
    projection = torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1)
    out[DFL_PROJECTION_KEY] = projection.to(dtype) if dtype is not None else projection
    return out


def yolov8_config(scale: str) -> str:
    """The detkit config of a YOLOv8 scale, relative to the repository root."""
    if scale not in YOLOV8_SCALES:
        raise ConversionError(f"unknown YOLOv8 scale {scale!r}; accepted: {', '.join(YOLOV8_SCALES)}")
    return f"configs/yolov8{scale}_tal.py"


def required_overrides(weights: ConvertedWeights) -> list[str]:
    """``--cfg-options`` the YOLOv8 configs need for these weights (class count, DFL bins)."""
    overrides = []
    if weights.num_classes != DEFAULT_NUM_CLASSES:
        overrides.append(f"model.head.num_classes={weights.num_classes}")
    if weights.reg_max != DEFAULT_REG_MAX:
        overrides.append(f"model.head.coder.reg_max={weights.reg_max}")
    return overrides
