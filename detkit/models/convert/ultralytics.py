"""Ultralytics YOLOv8, YOLO11 and YOLO26 detection weights -> detkit's ``configs/yolov8{n,s,m,l,x}_tal.py``,
``configs/yolo11{n,s,m,l,x}_tal.py`` and ``configs/yolo26{n,s,m,l,x}.py`` models.

Pure functions over ``state_dict`` key names and tensors; nothing here imports ultralytics
(``tools/convert_weights.py`` unpickles the checkpoint and hands its ``state_dict`` here).

A layout (:class:`UltralyticsLayout`) is data: each Ultralytics layer that holds weights
(``model.{i}.``) is a detkit module path and a block kind, and each kind lists how the names below
a layer map (:data:`BLOCK_PARTS`: ``m.{k}.cv{j}`` bottleneck convs are detkit's ``blocks.{k}.conv{j}``,
C3k's inner ``m`` is ``blocks``, attention keeps its names). The ``Detect`` layer is detkit's
``head``: per level ``i``, ``cv2.{i}`` (two 3x3 convs, then a 1x1 conv to the box parameters) is
``head.box_convs.{i}.{0,1}`` + ``head.box_preds.{i}``, ``cv3.{i}`` (class branch) is
``head.cls_convs.{i}`` + ``head.cls_preds.{i}`` (YOLO11's and YOLO26's class convs are depthwise 3x3 +
1x1 pairs, ``cls_convs.{i}.{0,1}.{0,1}``), and YOLO26's end-to-end copies ``one2one_cv2`` /
``one2one_cv3`` are ``head.one2one_branch.*``. ``dfl.conv.weight`` is Ultralytics' fixed DFL
projection ``arange(reg_max)``, which detkit's ``DFLCoder`` holds as a constant: it is checked and
dropped (YOLO26 has none: ``reg_max=1``, plain ltrb distances).

The family is read from the weights (the set of layers; an end-to-end head means YOLO26) and the
scale from the stem's width and the number of blocks in layer 2 (YOLO11/26 m and l share a width).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from detkit.errors import CheckpointError
from detkit.models.backbones.cspdarknet import (
    YOLO11_SCALES,
    YOLO26_SCALES,
    YOLOV8_SCALES,
    CSPScale,
    scale_channels,
    scale_depth,
)

__all__ = [
    "BLOCK_PARTS",
    "DEFAULT_NUM_CLASSES",
    "DEFAULT_REG_MAX",
    "DFL_PROJECTION_KEY",
    "FAMILIES",
    "YOLO11",
    "YOLO11_LAYERS",
    "YOLO26",
    "YOLOV8",
    "YOLOV8_DETECT_LAYER",
    "YOLOV8_LAYERS",
    "ConversionError",
    "ConvertedWeights",
    "KeyPart",
    "UltralyticsLayout",
    "UltralyticsModel",
    "check_dfl_projection",
    "class_name_list",
    "convert_ultralytics",
    "convert_yolov8",
    "detect_family",
    "detect_scale",
    "detkit_to_ultralytics_key",
    "required_overrides",
    "to_ultralytics_state_dict",
    "ultralytics_config",
    "ultralytics_layout",
    "ultralytics_to_detkit_key",
    "yolov8_config",
    "yolov8_scale",
]

DEFAULT_NUM_CLASSES = 80  # what the configs build (COCO)
DEFAULT_REG_MAX = 16  # YOLOv8's and YOLO11's DFLCoder(reg_max=16)

_UNIT = r"(conv\.weight|bn\.(weight|bias|running_mean|running_var|num_batches_tracked))"  # Conv-BN-SiLU
_PRED = r"(weight|bias)"  # a plain 1x1 conv
_ATTN = rf"(qkv|proj|pe)\.{_UNIT}"
_FFN = rf"[01]\.{_UNIT}"


@dataclass(frozen=True)
class KeyPart:
    """One name pattern below a layer: ``ultralytics`` and ``detkit`` are key starts in which ``{0}``,
    ``{1}``... stand for the same indices on both sides; ``rest`` is the regex of what follows (kept as is)."""

    ultralytics: str
    detkit: str
    rest: str = _UNIT


def _same(template: str, rest: str = _UNIT) -> KeyPart:
    return KeyPart(template, template, rest)


_CV12 = _same("cv", rf"[12]\.{_UNIT}")  # a CSP block's outer 1x1 convs cv1, cv2


def _head_parts(source: str, target: str, depthwise_cls: bool) -> tuple[KeyPart, ...]:
    """An Ultralytics Detect branch pair (``cv2``/``cv3`` or ``one2one_cv2``/``one2one_cv3``) -> detkit's."""
    cls_convs = rf"[01]\.[01]\.{_UNIT}" if depthwise_cls else rf"[01]\.{_UNIT}"
    return (KeyPart(f"{source}cv2.{{0}}.2.", f"{target}box_preds.{{0}}.", _PRED),
            KeyPart(f"{source}cv2.{{0}}.", f"{target}box_convs.{{0}}.", rf"[01]\.{_UNIT}"),
            KeyPart(f"{source}cv3.{{0}}.2.", f"{target}cls_preds.{{0}}.", _PRED),
            KeyPart(f"{source}cv3.{{0}}.", f"{target}cls_convs.{{0}}.", cls_convs))


_BOTTLENECKS = (_CV12, KeyPart("m.{0}.cv1.", "blocks.{0}.conv1."), KeyPart("m.{0}.cv2.", "blocks.{0}.conv2."))
#: Block kind -> the name patterns below a layer of that kind (Ultralytics' module -> detkit's).
BLOCK_PARTS: dict[str, tuple[KeyPart, ...]] = {
    "Conv": (_same(""),),
    "SPPF": (_CV12,),
    "C2f": _BOTTLENECKS,
    "C3k2": _BOTTLENECKS,  # C3k2 with bottleneck inner blocks (c3k=False)
    "C3k2 with C3k": (_CV12, KeyPart("m.{0}.m.{1}.cv1.", "blocks.{0}.blocks.{1}.conv1."),
                      KeyPart("m.{0}.m.{1}.cv2.", "blocks.{0}.blocks.{1}.conv2."),
                      KeyPart("m.{0}.cv", "blocks.{0}.cv", rf"[123]\.{_UNIT}")),
    "C3k2 with attention": (_CV12, KeyPart("m.{0}.0.cv1.", "blocks.{0}.0.conv1."),
                            KeyPart("m.{0}.0.cv2.", "blocks.{0}.0.conv2."),
                            KeyPart("m.{0}.1.attn.", "blocks.{0}.1.attn.", _ATTN),
                            KeyPart("m.{0}.1.ffn.", "blocks.{0}.1.ffn.", _FFN)),
    "C2PSA": (_CV12, KeyPart("m.{0}.attn.", "blocks.{0}.attn.", _ATTN),
              KeyPart("m.{0}.ffn.", "blocks.{0}.ffn.", _FFN)),
    "Detect": _head_parts("", "", depthwise_cls=False),
    "Detect (YOLO11)": _head_parts("", "", depthwise_cls=True),
    "Detect (YOLO26, end-to-end)": (_head_parts("", "", depthwise_cls=True)
                                    + _head_parts("one2one_", "one2one_branch.", depthwise_cls=True)),
}


@dataclass(frozen=True)
class UltralyticsLayout:
    """One Ultralytics detection layout, as data.

    Attributes:
        family: ``"yolov8"``, ``"yolo11"`` or ``"yolo26"``.
        name: how users call it (``"YOLOv8"``).
        layers: Ultralytics layer index -> (detkit module path, block kind of :data:`BLOCK_PARTS`), the
            ``Detect`` layer (-> ``"head"``) included.
        detect_layer: the ``Detect`` layer's index.
        scales: the family's scale table (what picks the config and reads the scale).
        layer2_blocks: blocks of layer 2 before depth scaling (tells m from l in YOLO11 / YOLO26).
        config: the detkit config of a scale, ``{scale}`` filled in.
        dfl: the head regresses boxes with DFL (a fixed projection ``dfl.conv.weight``); else ``reg_max=1``.
        c3k_layers: layers whose C3k2 block has C3k inner blocks at scales with ``c3k`` (m, l, x).
    """

    family: str
    name: str
    layers: Mapping[int, tuple[str, str]]
    detect_layer: int
    scales: Mapping[str, CSPScale]
    layer2_blocks: int
    config: str
    dfl: bool = True
    c3k_layers: tuple[int, ...] = field(default=())

    @property
    def dfl_key(self) -> str:
        return f"model.{self.detect_layer}.dfl.conv.weight"

    @property
    def end2end(self) -> bool:
        return "end-to-end" in self.layers[self.detect_layer][1]

    def at_scale(self, scale: str) -> UltralyticsLayout:
        """This layout with the block kinds of ``scale`` (C3k inner blocks everywhere at m, l, x)."""
        if scale not in self.scales:
            raise ConversionError(f"unknown {self.name} scale {scale!r}; accepted: {', '.join(self.scales)}")
        if not CSPScale(*self.scales[scale]).c3k:
            return self
        layers = {i: (path, "C3k2 with C3k" if i in self.c3k_layers else kind)
                  for i, (path, kind) in self.layers.items()}
        return replace(self, layers=layers)


def _backbone_and_neck(first_neck: int) -> dict[int, str]:
    """Layer -> detkit path of the CSPDarknet + CSPPAN layouts (YOLOv8: neck from layer 12; YOLO11/26: 13)."""
    n = first_neck
    return {0: "backbone.stem",
            **{2 * k - 1 + j: f"backbone.stages.{k}.{j}" for k in range(1, 5) for j in range(2)},
            9: "backbone.stages.4.2", **({10: "backbone.stages.4.3"} if n == 13 else {}),
            n: "neck.td_blocks.0", n + 3: "neck.td_blocks.1", n + 4: "neck.down.0", n + 6: "neck.bu_blocks.0",
            n + 7: "neck.down.1", n + 9: "neck.bu_blocks.1"}


# Ultralytics yolov8.yaml layer index -> detkit module path (layers 10, 11, 13, 14, 17, 20 are
# upsample / concat, without parameters).
YOLOV8_LAYERS: dict[int, str] = _backbone_and_neck(12)
YOLOV8_DETECT_LAYER = 22
DFL_PROJECTION_KEY = f"model.{YOLOV8_DETECT_LAYER}.dfl.conv.weight"
# yolo11.yaml / yolo26.yaml: YOLOv8's with C2PSA as layer 10, every later layer one further.
YOLO11_LAYERS: dict[int, str] = _backbone_and_neck(13)

_V8_KINDS = {0: "Conv", 1: "Conv", 3: "Conv", 5: "Conv", 7: "Conv", 16: "Conv", 19: "Conv", 9: "SPPF",
             **dict.fromkeys((2, 4, 6, 8, 12, 15, 18, 21), "C2f"), 22: "Detect"}
_V11_KINDS = {0: "Conv", 1: "Conv", 3: "Conv", 5: "Conv", 7: "Conv", 17: "Conv", 20: "Conv", 9: "SPPF",
              10: "C2PSA", **dict.fromkeys((2, 4, 13, 16, 19), "C3k2"), **dict.fromkeys((6, 8, 22), "C3k2 with C3k"),
              23: "Detect (YOLO11)"}
_V26_KINDS = {**_V11_KINDS, **dict.fromkeys((13, 16, 19), "C3k2 with C3k"), 22: "C3k2 with attention",
              23: "Detect (YOLO26, end-to-end)"}


def _layers(paths: Mapping[int, str], kinds: Mapping[int, str], detect: int) -> dict[int, tuple[str, str]]:
    return {**{i: (path, kinds[i]) for i, path in paths.items()}, detect: ("head", kinds[detect])}


YOLOV8 = UltralyticsLayout("yolov8", "YOLOv8", _layers(YOLOV8_LAYERS, _V8_KINDS, 22), 22, YOLOV8_SCALES, 3,
                           "configs/yolov8{scale}_tal.py")
YOLO11 = UltralyticsLayout("yolo11", "YOLO11", _layers(YOLO11_LAYERS, _V11_KINDS, 23), 23, YOLO11_SCALES, 2,
                           "configs/yolo11{scale}_tal.py", c3k_layers=(2, 4, 13, 16, 19))
YOLO26 = UltralyticsLayout("yolo26", "YOLO26", _layers(YOLO11_LAYERS, _V26_KINDS, 23), 23, YOLO26_SCALES, 2,
                           "configs/yolo26{scale}.py", dfl=False, c3k_layers=(2, 4))
FAMILIES: dict[str, UltralyticsLayout] = {layout.family: layout for layout in (YOLOV8, YOLO11, YOLO26)}

# Heads of other tasks add these parts to Detect; their checkpoints do not convert.
_OTHER_TASK_PARTS = {"cv4": "segmentation masks, pose keypoints or OBB angles", "proto": "segmentation masks",
                     "cv5": "keypoint visibility"}
_STEM_KEY = "model.0.conv.weight"
_LAYER_RE = re.compile(r"model\.(\d+)\.(.+)")


class ConversionError(CheckpointError):
    """Weights that are not a YOLOv8 / YOLO11 / YOLO26 detection model detkit can convert (the message says why)."""


# ----------------------------------------------------------------------------------------------
# key names
# ----------------------------------------------------------------------------------------------


def _template_regex(template: str) -> re.Pattern[str]:
    """``"m.{0}.cv{1}."`` -> a regex matching that start of a key, indices as groups ``i0``, ``i1``."""
    pieces = re.split(r"\{(\d)\}", template)
    pattern = "".join(re.escape(p) if n % 2 == 0 else rf"(?P<i{p}>\d+)" for n, p in enumerate(pieces))
    return re.compile(pattern)


def _rename(rest: str, parts: Sequence[KeyPart], to_detkit: bool) -> str | None:
    """``rest`` (a key below a layer) under the other side's names, by the first part that matches it whole."""
    for part in parts:
        source, target = (part.ultralytics, part.detkit) if to_detkit else (part.detkit, part.ultralytics)
        match = _template_regex(source).match(rest)
        if match is not None and re.fullmatch(part.rest, rest[match.end():]):
            indices = sorted(match.groupdict().items())  # [("i0", "3"), ("i1", "2")]
            return target.format(*(value for _, value in indices)) + rest[match.end():]
    return None


def ultralytics_to_detkit_key(key: str, layout: UltralyticsLayout = YOLOV8) -> str:
    """Ultralytics ``state_dict`` key -> detkit :class:`Detector` key, by ``layout``'s layer table.

    ``model.{i}.<rest>`` -> ``layers[i]``'s path + ``<rest>`` renamed by its block kind's
    :data:`BLOCK_PARTS` (YOLOv8: C2f ``m.{k}.cv{j}`` -> ``blocks.{k}.conv{j}``;
    ``model.22.cv2.{i}.{0,1}.<rest>`` -> ``head.box_convs.{i}.{0,1}.<rest>``, ``model.22.cv2.{i}.2.<p>``
    -> ``head.box_preds.{i}.<p>``; ``cv3``: ``cls_convs`` / ``cls_preds``).

    Raises:
        ConversionError: for a key outside the layout (the DFL projection included: it has no detkit
            counterpart; see :func:`check_dfl_projection`).
    """
    match = _LAYER_RE.fullmatch(key)
    if match is not None and int(match.group(1)) in layout.layers:
        path, kind = layout.layers[int(match.group(1))]
        rest = _rename(match.group(2), BLOCK_PARTS[kind], to_detkit=True)
        if rest is not None:
            return f"{path}.{rest}"
    raise ConversionError(f"Ultralytics key {key!r} has no place in detkit's {layout.name} model")


def detkit_to_ultralytics_key(key: str, layout: UltralyticsLayout = YOLOV8) -> str:
    """detkit :class:`Detector` key -> Ultralytics key (the inverse of :func:`ultralytics_to_detkit_key`).

    Raises:
        ConversionError: for a key outside the layout.
    """
    # Longest path first: "backbone.stages.1.1" must not take "backbone.stages.1.10...".
    for layer, (path, kind) in sorted(layout.layers.items(), key=lambda item: -len(item[1][0])):
        if key.startswith(path + "."):
            rest = _rename(key[len(path) + 1:], BLOCK_PARTS[kind], to_detkit=False)
            if rest is not None:
                return f"model.{layer}.{rest}"
            break
    raise ConversionError(f"detkit key {key!r} has no place in Ultralytics' {layout.name} model")


# ----------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------


def _layer_summary(layout: UltralyticsLayout) -> str:
    runs: list[list[int]] = []
    for i in sorted(layout.layers):
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    text = ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)
    return f"{layout.name} has weights in layers {text}"


def detect_family(state_dict: Mapping[str, Tensor]) -> UltralyticsLayout:
    """The layout of Ultralytics detection weights, read from their layers and head.

    Raises:
        ConversionError: not an Ultralytics YOLO model, a head of another task, an end-to-end head
            on another layout (YOLOv10), a layer set no converted family has (the closest named).
    """
    if _STEM_KEY not in state_dict:
        raise ConversionError(f"no {_STEM_KEY!r}: not an Ultralytics YOLO model's weights")
    layers = {int(m.group(1)) for k in state_dict if (m := _LAYER_RE.fullmatch(k))}
    last = max(layers)
    for part, what in _OTHER_TASK_PARTS.items():
        if any(k.startswith(f"model.{last}.{part}.") for k in state_dict):
            raise ConversionError(f"the head has {part!r} weights ({what}): only detection models convert")
    end2end = any(re.match(r"model\.\d+\.one2one_", k) for k in state_dict)
    same_layers = [layout for layout in FAMILIES.values() if set(layout.layers) == layers]
    for layout in same_layers:
        if layout.end2end == end2end:
            return layout
    if same_layers:  # YOLOv8's layers with an end-to-end head
        raise ConversionError(f"an end-to-end (NMS-free) one-to-one head on {same_layers[0].name}'s layers: "
                              "not a layout detkit converts (YOLO26's end-to-end head is on YOLO11's layers)")
    if end2end:
        raise ConversionError(f"an end-to-end (NMS-free) one-to-one head on layers {sorted(layers)}, not YOLO26's "
                              "(YOLOv10 and custom end-to-end yamls do not convert)")
    closest = min(FAMILIES.values(), key=lambda f: len(layers ^ set(f.layers)))
    expected = set(closest.layers)
    diff = [f"{what} {sorted(found)}" for what, found in
            (("unexpected layers", layers - expected), ("missing layers", expected - layers)) if found]
    raise ConversionError(
        f"not a layer layout detkit converts (closest: {closest.name}'s, with {', '.join(diff)}; "
        f"{'; '.join(_layer_summary(f) for f in (YOLOV8, YOLO11))}, YOLO26 as YOLO11 with an end-to-end head): "
        "YOLOv5u, YOLOv9, YOLOv10, P2/P6 variants and custom yamls do not convert")


def _check_keys(state_dict: Mapping[str, Tensor], layout: UltralyticsLayout) -> None:
    """ConversionError for a key no part of its layer's block kind names, or a missing/extra DFL projection."""
    for key in state_dict:
        match = _LAYER_RE.fullmatch(key)
        if match is None:
            raise ConversionError(f"{key!r} is not a 'model.<layer>.' key: not an Ultralytics YOLO model's weights")
        layer, rest = int(match.group(1)), match.group(2)
        path, kind = layout.layers[layer]
        if layout.dfl and key == layout.dfl_key:
            continue
        if _rename(rest, BLOCK_PARTS[kind], to_detkit=True) is None:
            if layer == layout.detect_layer and layout.family == "yolov8" and re.match(r"cv3\.\d+\.0\.0\.", rest):
                raise ConversionError("the Detect head's class branch uses depthwise convs (YOLO11 and later), "
                                      "not YOLOv8's two 3x3 convs, on YOLOv8's layers: a layout detkit does not "
                                      "convert")
            raise ConversionError(f"{key!r} is not part of {layout.name}'s layer {layer} ({kind}): not a "
                                  f"{layout.name} model (YOLOv9 and custom yamls do not convert)")
    if layout.dfl and layout.dfl_key not in state_dict:
        raise ConversionError(f"no {layout.dfl_key!r}: the Detect head has no DFL box regression")
    if not layout.dfl and f"model.{layout.detect_layer}.cv2.0.2.weight" not in state_dict:
        raise ConversionError(f"no one-to-many branch (model.{layout.detect_layer}.cv2): {layout.name} weights "
                              "fused for inference do not convert; convert the checkpoint Ultralytics saved")


def check_dfl_projection(weight: Tensor, key: str = DFL_PROJECTION_KEY) -> int:
    """The DFL projection must be ``arange(reg_max)`` shaped ``(1, reg_max, 1, 1)``; returns reg_max.

    Raises:
        ConversionError: any other shape or value (detkit's ``DFLCoder`` always integrates over
            ``0..reg_max-1``, so other weights would change the boxes).
    """
    if weight.dim() != 4 or weight.shape[0] != 1 or weight.shape[2:] != (1, 1) or weight.shape[1] < 2:
        raise ConversionError(f"{key} has shape {tuple(weight.shape)}, expected (1, reg_max, 1, 1)")
    reg_max = int(weight.shape[1])
    expected = torch.arange(reg_max, dtype=torch.float32)
    if not torch.equal(weight.detach().float().flatten(), expected):
        raise ConversionError(f"{key} is not arange({reg_max}) (got {weight.flatten()[:4].tolist()}"
                              "...): detkit's DFLCoder integrates over fixed bins 0..reg_max-1")
    return reg_max


def detect_scale(state_dict: Mapping[str, Tensor], layout: UltralyticsLayout = YOLOV8) -> str:
    """The scale (``n``/``s``/``m``/``l``/``x``) from the stem's width and layer 2's block count.

    Raises:
        ConversionError: no stem, or a (width, blocks) no scale of the family has.
    """
    if _STEM_KEY not in state_dict:
        raise ConversionError(f"no {_STEM_KEY!r}: not an Ultralytics YOLO model's weights")
    width = int(state_dict[_STEM_KEY].shape[0])
    blocks = len({m.group(1) for k in state_dict if (m := re.match(r"model\.2\.m\.(\d+)\.", k))})
    shapes = {name: (scale_channels(min(64, s.max_channels or 64), s.widen_factor),
                     scale_depth(layout.layer2_blocks, s.deepen_factor))
              for name, s in ((name, CSPScale(*s)) for name, s in layout.scales.items())}
    same_width = [name for name, (w, _) in shapes.items() if w == width]
    if len(same_width) == 1:
        return same_width[0]  # the blocks of every layer are checked against the config when it loads
    if not same_width:
        accepted = ", ".join(f"{w} ({n})" for n, (w, _) in sorted(shapes.items(), key=lambda item: item[1]))
        raise ConversionError(f"stem width {width} is not a {layout.name} scale's (accepted: {accepted})")
    for name in same_width:  # YOLO11 / YOLO26 m and l: the same width, 1 or 2 blocks per C3k2
        if shapes[name][1] == blocks:
            return name
    accepted = ", ".join(f"{shapes[n][1]} ({n})" for n in same_width)
    raise ConversionError(f"stem width {width} with {blocks} blocks in layer 2 is not a {layout.name} scale's "
                          f"(accepted blocks at this width: {accepted})")


def yolov8_scale(state_dict: Mapping[str, Tensor]) -> str:
    """YOLOv8's scale from the stem's width (16, 32, 48, 64, 80): :func:`detect_scale` for YOLOv8."""
    return detect_scale(state_dict, YOLOV8)


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
        scale: the scale (``n``/``s``/``m``/``l``/``x``).
        num_classes: C of the head.
        reg_max: DFL bins per side (1: no DFL, YOLO26).
        class_names: C names.
        source_dtype: dtype of the source's floating tensors (``torch.float16`` for Ultralytics'
            checkpoints).
        family: ``"yolov8"``, ``"yolo11"`` or ``"yolo26"``.
    """

    state_dict: dict[str, Tensor]
    scale: str
    num_classes: int
    reg_max: int
    class_names: list[str]
    source_dtype: torch.dtype
    family: str = "yolov8"

    @property
    def layout(self) -> UltralyticsLayout:
        return FAMILIES[self.family].at_scale(self.scale)

    @property
    def model_name(self) -> str:
        """``"YOLO26s"``."""
        return f"{FAMILIES[self.family].name}{self.scale}"


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


def ultralytics_layout(family: str, scale: str) -> UltralyticsLayout:
    """The layout of a family (``yolov8`` / ``yolo11`` / ``yolo26``) at a scale."""
    if family not in FAMILIES:
        raise ConversionError(f"unknown family {family!r}; accepted: {', '.join(FAMILIES)}")
    return FAMILIES[family].at_scale(scale)


def convert_ultralytics(state_dict: Mapping[str, Tensor],
                        names: Mapping[int, str] | Sequence[str] | None = None) -> ConvertedWeights:
    """Ultralytics YOLOv8 / YOLO11 / YOLO26 detection ``state_dict`` (+ ``model.names``) -> detkit weights.

    The family and scale are read from the weights (:func:`detect_family`, :func:`detect_scale`);
    every key is renamed (:func:`ultralytics_to_detkit_key`) and every floating tensor cast to fp32
    (Ultralytics saves fp16; fp16 -> fp32 is exact); the DFL projection is checked and dropped.

    Raises:
        ConversionError: another layout or task, a DFL projection other than ``arange``, class
            names that do not match the head, non-finite weights.
    """
    family = detect_family(state_dict)
    scale = detect_scale(state_dict, family)
    layout = family.at_scale(scale)
    _check_keys(state_dict, layout)
    head = f"model.{layout.detect_layer}"
    reg_max = check_dfl_projection(state_dict[layout.dfl_key], layout.dfl_key) if layout.dfl else 1
    num_classes = int(state_dict[f"{head}.cv3.0.2.weight"].shape[0])
    for branch in ("cv2", "one2one_cv2") if layout.end2end else ("cv2",):
        box_params = int(state_dict[f"{head}.{branch}.0.2.weight"].shape[0])
        if box_params != 4 * reg_max:
            what = f"4 * reg_max = {4 * reg_max}" if layout.dfl else "4 (YOLO26: reg_max=1, no DFL)"
            raise ConversionError(f"the box branch ({branch}) predicts {box_params} values per prior, expected {what}")
    converted: dict[str, Tensor] = {}
    dtypes = set()
    for key, value in state_dict.items():
        if layout.dfl and key == layout.dfl_key:
            continue
        if not isinstance(value, Tensor):
            raise ConversionError(f"{key!r} is a {type(value).__name__}, not a tensor")
        if value.is_floating_point():
            dtypes.add(value.dtype)
            if not torch.isfinite(value).all():
                raise ConversionError(f"{key!r} holds non-finite values")
            value = value.detach().to(torch.float32)
        converted[ultralytics_to_detkit_key(key, layout)] = value.detach().clone()
    return ConvertedWeights(
        state_dict=converted, scale=scale, num_classes=num_classes, reg_max=reg_max,
        class_names=class_name_list(names, num_classes),
        source_dtype=max(dtypes, key=lambda d: torch.finfo(d).bits) if dtypes else torch.float32,
        family=layout.family,
    )


def convert_yolov8(state_dict: Mapping[str, Tensor],
                   names: Mapping[int, str] | Sequence[str] | None = None) -> ConvertedWeights:
    """:func:`convert_ultralytics` for YOLOv8 weights only (ConversionError for YOLO11 / YOLO26)."""
    weights = convert_ultralytics(state_dict, names)
    if weights.family != "yolov8":
        raise ConversionError(f"{weights.model_name} weights, not YOLOv8's: use convert_ultralytics")
    return weights


def to_ultralytics_state_dict(state_dict: Mapping[str, Tensor], reg_max: int = DEFAULT_REG_MAX,
                              dtype: torch.dtype | None = None,
                              layout: UltralyticsLayout = YOLOV8) -> dict[str, Tensor]:
    """detkit ``state_dict`` -> Ultralytics names, with the DFL projection added back when the layout
    has one (floating tensors cast to ``dtype`` when given, e.g. fp16 as Ultralytics saves them)."""
    out = {}
    for key, value in state_dict.items():
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[detkit_to_ultralytics_key(key, layout)] = value
    if layout.dfl:
        projection = torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1)
        out[layout.dfl_key] = projection.to(dtype) if dtype is not None else projection
    return out


def ultralytics_config(family: str, scale: str) -> str:
    """The detkit config of a family's scale, relative to the repository root."""
    return ultralytics_layout(family, scale).config.format(scale=scale)


def yolov8_config(scale: str) -> str:
    """The detkit config of a YOLOv8 scale, relative to the repository root."""
    return ultralytics_config("yolov8", scale)


def required_overrides(weights: ConvertedWeights) -> list[str]:
    """``--cfg-options`` the configs need for these weights (class count, DFL bins)."""
    overrides = []
    if weights.num_classes != DEFAULT_NUM_CLASSES:
        overrides.append(f"model.head.num_classes={weights.num_classes}")
    if FAMILIES[weights.family].dfl and weights.reg_max != DEFAULT_REG_MAX:
        overrides.append(f"model.head.coder.reg_max={weights.reg_max}")
    return overrides
