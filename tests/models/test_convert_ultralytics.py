"""Ultralytics YOLOv8 / YOLO11 / YOLO26 -> detkit weight mapping (detkit.models.convert.ultralytics), without
ultralytics: hand-written key pairs, round trips over detkit's own models (every YOLO11 / YOLO26 scale, its
family and scale read back), fp16 -> fp32, the DFL projection, layout errors, scale and class-name reading;
the yolov8{n,s,m,l,x}_tal.py configs' parameter counts pinned to Ultralytics 8.4.190's."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import torch

from detkit.config import instantiate, load_config
from detkit.models.convert.ultralytics import (
    DFL_PROJECTION_KEY,
    FAMILIES,
    ConversionError,
    check_dfl_projection,
    class_name_list,
    convert_ultralytics,
    convert_yolov8,
    detect_scale,
    detkit_to_ultralytics_key,
    required_overrides,
    to_ultralytics_state_dict,
    ultralytics_config,
    ultralytics_layout,
    ultralytics_to_detkit_key,
    yolov8_config,
    yolov8_scale,
)

ROOT = Path(__file__).resolve().parents[2]
# Ultralytics 8.4.190, DetectionModel("yolov8{scale}.yaml", nc=80): whole model and layers 0-9.
ULTRALYTICS_PARAMS = {"n": (3_157_200, 1_272_656), "s": (11_166_560, 5_079_712), "m": (25_902_640, 11_855_856),
                      "l": (43_691_520, 19_808_576), "x": (68_229_648, 30_943_120)}
DFL_WEIGHTS = 16  # Ultralytics' fixed projection arange(16), a constant in detkit's DFLCoder

# Hand-checked against Ultralytics' yolov8.yaml module tree.
KEY_PAIRS = [
    ("model.0.conv.weight", "backbone.stem.conv.weight"),
    ("model.1.bn.running_mean", "backbone.stages.1.0.bn.running_mean"),
    ("model.2.cv2.conv.weight", "backbone.stages.1.1.cv2.conv.weight"),
    ("model.2.m.0.cv1.bn.running_var", "backbone.stages.1.1.blocks.0.conv1.bn.running_var"),
    ("model.6.m.1.cv2.conv.weight", "backbone.stages.3.1.blocks.1.conv2.conv.weight"),
    ("model.9.cv1.conv.weight", "backbone.stages.4.2.cv1.conv.weight"),
    ("model.12.m.0.cv2.bn.weight", "neck.td_blocks.0.blocks.0.conv2.bn.weight"),
    ("model.15.cv1.bn.num_batches_tracked", "neck.td_blocks.1.cv1.bn.num_batches_tracked"),
    ("model.16.conv.weight", "neck.down.0.conv.weight"),
    ("model.19.bn.bias", "neck.down.1.bn.bias"),
    ("model.21.m.0.cv2.conv.weight", "neck.bu_blocks.1.blocks.0.conv2.conv.weight"),
    ("model.22.cv2.1.0.conv.weight", "head.box_convs.1.0.conv.weight"),
    ("model.22.cv2.0.1.bn.running_var", "head.box_convs.0.1.bn.running_var"),
    ("model.22.cv2.0.2.bias", "head.box_preds.0.bias"),
    ("model.22.cv3.2.1.bn.weight", "head.cls_convs.2.1.bn.weight"),
    ("model.22.cv3.1.2.weight", "head.cls_preds.1.weight"),
]


def build(scale: str, *options: str) -> torch.nn.Module:
    return instantiate(load_config(ROOT / yolov8_config(scale), list(options)).model)


@pytest.fixture(scope="module", params=["n", "s"])
def detkit_model(request):
    torch.manual_seed(0)
    model = build(request.param)
    with torch.no_grad():  # values that fp16 cannot hold exactly, so the cast is visible
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape) * 0.3 + 1 / 3)
    return request.param, model


@pytest.mark.parametrize("ultralytics_key, detkit_key", KEY_PAIRS)
def test_hand_written_key_pairs(ultralytics_key, detkit_key):
    assert ultralytics_to_detkit_key(ultralytics_key) == detkit_key
    assert detkit_to_ultralytics_key(detkit_key) == ultralytics_key


def test_every_detkit_key_round_trips_and_nothing_is_left_over(detkit_model):
    scale, model = detkit_model
    state = model.state_dict()
    names = {detkit_to_ultralytics_key(k): k for k in state}
    assert len(names) == len(state)  # no two detkit keys share an Ultralytics name
    assert all(ultralytics_to_detkit_key(u) == k for u, k in names.items())
    layers = {int(u.split(".")[1]) for u in names}
    assert layers == {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 18, 19, 21, 22}
    # The C2f bottlenecks and the head's three parts per branch and level are all there.
    head = [u.split(".") for u in names if u.startswith("model.22.")]
    assert {(p[2], p[3]) for p in head} == {(b, str(i)) for b in ("cv2", "cv3") for i in range(3)}  # levels
    assert {p[4] for p in head} == {"0", "1", "2"}  # two convs and the 1x1 prediction
    assert sum(".m.0.cv1.conv.weight" in u for u in names) == 8  # one per C2f (4 backbone + 4 PAN)


def test_conversion_gives_back_the_same_tensors_in_fp32(detkit_model):
    scale, model = detkit_model
    state = model.state_dict()
    saved = to_ultralytics_state_dict(state, dtype=torch.float16)  # as Ultralytics saves: fp16
    assert saved[DFL_PROJECTION_KEY].dtype == torch.float16
    weights = convert_yolov8(saved, {i: f"c{i}" for i in range(80)})
    assert set(weights.state_dict) == set(state)
    for key, value in state.items():
        got = weights.state_dict[key]
        expected = value.half().float() if value.is_floating_point() else value
        assert got.dtype == expected.dtype and torch.equal(got, expected), key
    assert (weights.scale, weights.num_classes, weights.reg_max) == (scale, 80, 16)
    assert weights.source_dtype == torch.float16 and weights.class_names[:2] == ["c0", "c1"]
    assert required_overrides(weights) == []
    model.load_state_dict(weights.state_dict, strict=True)


def test_fp16_to_fp32_is_exact_and_counters_keep_their_dtype():
    state = {k: v.half() if v.is_floating_point() else v for k, v in yolov8n_ultralytics_state().items()}
    state["model.0.bn.weight"] = torch.tensor([0.1, 65504.0, -2.0**-24, 1 / 3] + [1.0] * 12).half()
    state["model.0.bn.num_batches_tracked"] = torch.tensor(7)
    got = convert_yolov8(state).state_dict
    assert got["backbone.stem.bn.weight"].dtype == torch.float32
    assert got["backbone.stem.bn.weight"][:4].tolist() == [0.0999755859375, 65504.0, -2.0**-24, 0.333251953125]
    assert got["backbone.stem.bn.num_batches_tracked"].dtype == torch.int64
    assert got["backbone.stem.bn.num_batches_tracked"].item() == 7


def test_other_class_counts_are_read_from_the_head():
    weights = convert_yolov8(to_ultralytics_state_dict(build("n", "model.head.num_classes=3").state_dict()),
                             {0: "cat", 1: "dog", 2: "fish"})
    assert weights.num_classes == 3 and weights.class_names == ["cat", "dog", "fish"]
    assert required_overrides(weights) == ["model.head.num_classes=3"]


def test_dfl_projection_is_checked_and_dropped():
    assert check_dfl_projection(torch.arange(16.0).view(1, 16, 1, 1).half()) == 16
    assert check_dfl_projection(torch.arange(8.0).view(1, 8, 1, 1)) == 8
    with pytest.raises(ConversionError, match=r"is not arange\(16\)"):
        check_dfl_projection((torch.arange(16.0) * 2).view(1, 16, 1, 1))
    with pytest.raises(ConversionError, match=r"shape \(16,\)"):
        check_dfl_projection(torch.arange(16.0))
    state = yolov8n_ultralytics_state()
    assert DFL_PROJECTION_KEY in state and not any("dfl" in k for k in convert_yolov8(state).state_dict)
    state[DFL_PROJECTION_KEY] = torch.ones(1, 16, 1, 1)
    with pytest.raises(ConversionError, match="is not arange"):
        convert_yolov8(state)


@pytest.mark.parametrize("width, scale", [(16, "n"), (32, "s"), (48, "m"), (64, "l"), (80, "x")])
def test_scale_from_the_stem_width(width, scale):
    assert yolov8_scale({"model.0.conv.weight": torch.zeros(width, 3, 3, 3)}) == scale


def test_unknown_stem_width_is_refused():
    with pytest.raises(ConversionError, match=r"stem width 40 is not a YOLOv8 scale's \(accepted: 16 \(n\)"):
        yolov8_scale({"model.0.conv.weight": torch.zeros(40, 3, 3, 3)})


def test_class_names_from_ultralytics_forms():
    assert class_name_list({1: "b", 0: "a"}, 2) == ["a", "b"]
    assert class_name_list({"0": "a", "1": "b"}, 2) == ["a", "b"]
    assert class_name_list(["a", "b"], 2) == ["a", "b"]
    assert class_name_list(None, 3) == ["0", "1", "2"]
    with pytest.raises(ConversionError, match="2 class names for a head with 3 classes"):
        class_name_list(["a", "b"], 3)
    with pytest.raises(ConversionError, match="not indexed 0..1"):
        class_name_list({0: "a", 2: "c"}, 2)


@pytest.mark.parametrize("key", ["model.10.weight", "model.22.cv2.0.3.weight", "model.22.cv4.0.0.conv.weight",
                                 DFL_PROJECTION_KEY, "backbone.stem.conv.weight", "model.23.cv2.0.2.bias"])
def test_keys_outside_the_layout_are_refused(key):
    with pytest.raises(ConversionError, match="has no place in detkit's YOLOv8 model"):
        ultralytics_to_detkit_key(key)


@pytest.mark.parametrize("key", ["head.obj_preds.0.weight", "head.stems.0.conv.weight",
                                 "neck.reduce.0.conv.weight", "model.0.conv.weight"])
def test_detkit_keys_outside_the_layout_are_refused(key):
    with pytest.raises(ConversionError, match="has no place in Ultralytics' YOLOv8 model"):
        detkit_to_ultralytics_key(key)


@lru_cache(maxsize=1)
def _yolov8n_ultralytics_state() -> dict[str, torch.Tensor]:
    return to_ultralytics_state_dict(build("n").state_dict())


def yolov8n_ultralytics_state() -> dict[str, torch.Tensor]:
    """detkit's yolov8n under Ultralytics' names (fresh tensors per call)."""
    return {k: v.clone() for k, v in _yolov8n_ultralytics_state().items()}


def _edited(change):
    state = yolov8n_ultralytics_state()
    change(state)
    return state


def _rename_cv3_depthwise(state):  # YOLO11's class branch: model.22.cv3.{i}.0.0.conv... instead of .0.conv
    for key in [k for k in state if k.startswith("model.22.cv3.0.0.")]:
        state[key.replace("cv3.0.0.", "cv3.0.0.0.")] = state.pop(key)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("model.0.conv.weight"), "not an Ultralytics YOLO model's weights"),
    (lambda s: s.__setitem__("model.22.cv4.0.0.conv.weight", torch.zeros(1)), "'cv4' weights"),
    (lambda s: s.__setitem__("model.22.proto.cv1.conv.weight", torch.zeros(1)), "'proto' weights"),
    (lambda s: s.__setitem__("model.22.one2one_cv2.0.2.bias", torch.zeros(1)), "one-to-one head on YOLOv8's"),
    (lambda s: s.__setitem__("model.23.conv.weight", torch.zeros(1)),
     r"closest: YOLOv8's, with unexpected layers \[23\]"),
    (lambda s: [s.pop(k) for k in [k for k in s if k.startswith("model.16.")]], r"missing layers \[16\]"),
    (lambda s: s.__setitem__("model.2.cv3.conv.weight", torch.zeros(1)), "not part of YOLOv8's layer 2 \\(C2f\\)"),
    (lambda s: s.__setitem__("model.2.m.0.cv3.conv.weight", torch.zeros(1)), "not part of YOLOv8's layer 2"),
    (lambda s: s.__setitem__("model.9.m.0.cv1.conv.weight", torch.zeros(1)), "layer 9 \\(SPPF\\)"),
    (_rename_cv3_depthwise, "depthwise convs"),
    (lambda s: s.pop(DFL_PROJECTION_KEY), "no DFL box regression"),
    (lambda s: s.__setitem__("model.22.cv2.0.2.weight", torch.zeros(60, 64, 1, 1)), "expected 4 \\* reg_max = 64"),
    (lambda s: s["model.5.bn.running_var"].fill_(float("inf")), "'model.5.bn.running_var' holds non-finite values"),
    (lambda s: s.__setitem__("model.5.bn.weight", [1.0]), "'model.5.bn.weight' is a list, not a tensor"),
])
def test_bad_weights_are_refused_with_the_reason(change, message):
    with pytest.raises(ConversionError, match=message):
        convert_yolov8(_edited(change))


def test_unknown_scale_has_no_config():
    with pytest.raises(ConversionError, match="unknown YOLOv8 scale 'q'"):
        yolov8_config("q")


@pytest.mark.parametrize("scale", sorted(ULTRALYTICS_PARAMS))
def test_configs_have_ultralytics_parameter_counts(scale):
    model = build(scale)
    total, backbone = ULTRALYTICS_PARAMS[scale]
    assert sum(p.numel() for p in model.backbone.parameters()) == backbone
    assert sum(p.numel() for p in model.parameters()) == total - DFL_WEIGHTS
    assert model.neck.num_blocks == {"n": 1, "s": 1, "m": 2, "l": 3, "x": 3}[scale]


# ----------------------------------------------------------------------------------------------
# YOLO11 and YOLO26
# ----------------------------------------------------------------------------------------------

# Ultralytics 8.4.190, DetectionModel("{family}{scale}.yaml", nc=80): state_dict entries (BN counters included).
ULTRALYTICS_KEYS = {("yolo11", "n"): 499, ("yolo11", "s"): 499, ("yolo11", "m"): 649, ("yolo11", "l"): 1015,
                    ("yolo11", "x"): 1015, ("yolo26", "n"): 708, ("yolo26", "s"): 708, ("yolo26", "m"): 768,
                    ("yolo26", "l"): 1092, ("yolo26", "x"): 1092}

# Hand-checked against the module trees of Ultralytics' yolo11n.yaml / yolo26n.yaml (8.4.190).
YOLO11N_KEY_PAIRS = [
    ("model.2.m.0.cv1.conv.weight", "backbone.stages.1.1.blocks.0.conv1.conv.weight"),  # C3k2, bottleneck
    ("model.6.m.0.cv3.bn.weight", "backbone.stages.3.1.blocks.0.cv3.bn.weight"),  # C3k2 with C3k
    ("model.8.m.0.m.1.cv2.conv.weight", "backbone.stages.4.1.blocks.0.blocks.1.conv2.conv.weight"),
    ("model.9.cv2.bn.running_var", "backbone.stages.4.2.cv2.bn.running_var"),  # SPPF
    ("model.10.m.0.attn.qkv.conv.weight", "backbone.stages.4.3.blocks.0.attn.qkv.conv.weight"),  # C2PSA
    ("model.10.m.0.ffn.1.bn.bias", "backbone.stages.4.3.blocks.0.ffn.1.bn.bias"),
    ("model.13.m.0.cv2.conv.weight", "neck.td_blocks.0.blocks.0.conv2.conv.weight"),
    ("model.17.conv.weight", "neck.down.0.conv.weight"),
    ("model.22.m.0.cv1.conv.weight", "neck.bu_blocks.1.blocks.0.cv1.conv.weight"),
    ("model.23.cv2.2.1.bn.weight", "head.box_convs.2.1.bn.weight"),
    ("model.23.cv3.0.0.0.conv.weight", "head.cls_convs.0.0.0.conv.weight"),  # depthwise 3x3
    ("model.23.cv3.1.1.1.bn.running_mean", "head.cls_convs.1.1.1.bn.running_mean"),  # 1x1
    ("model.23.cv3.2.2.bias", "head.cls_preds.2.bias"),
]
YOLO26N_KEY_PAIRS = [
    ("model.13.m.0.m.0.cv1.conv.weight", "neck.td_blocks.0.blocks.0.blocks.0.conv1.conv.weight"),  # C3k here
    ("model.22.m.0.0.cv2.conv.weight", "neck.bu_blocks.1.blocks.0.0.conv2.conv.weight"),  # C3k2 with attention
    ("model.22.m.0.1.attn.pe.bn.weight", "neck.bu_blocks.1.blocks.0.1.attn.pe.bn.weight"),
    ("model.22.m.0.1.ffn.0.conv.weight", "neck.bu_blocks.1.blocks.0.1.ffn.0.conv.weight"),
    ("model.23.cv2.0.2.weight", "head.box_preds.0.weight"),
    ("model.23.one2one_cv2.1.0.conv.weight", "head.one2one_branch.box_convs.1.0.conv.weight"),
    ("model.23.one2one_cv2.2.2.bias", "head.one2one_branch.box_preds.2.bias"),
    ("model.23.one2one_cv3.0.1.0.bn.weight", "head.one2one_branch.cls_convs.0.1.0.bn.weight"),
    ("model.23.one2one_cv3.1.2.weight", "head.one2one_branch.cls_preds.1.weight"),
]


def _config(family: str, scale: str) -> str:
    return ultralytics_config(family, scale)


@lru_cache(maxsize=4)
def _family_state(family: str, scale: str, *options: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return instantiate(load_config(ROOT / _config(family, scale), list(options)).model).state_dict()


def family_ultralytics_state(family: str, scale: str = "n", *options: str) -> dict[str, torch.Tensor]:
    """detkit's model of a family and scale under Ultralytics' names (fresh tensors per call)."""
    state = to_ultralytics_state_dict(_family_state(family, scale, *options), layout=ultralytics_layout(family, scale))
    return {k: v.clone() for k, v in state.items()}


@pytest.mark.parametrize(("family", "pairs"), [("yolo11", YOLO11N_KEY_PAIRS), ("yolo26", YOLO26N_KEY_PAIRS)])
def test_yolo11_yolo26_hand_written_key_pairs(family, pairs):
    layout = ultralytics_layout(family, "n")
    for ultralytics_key, detkit_key in pairs:
        assert ultralytics_to_detkit_key(ultralytics_key, layout) == detkit_key
        assert detkit_to_ultralytics_key(detkit_key, layout) == ultralytics_key


def test_c3k_at_m_l_x_changes_the_names_below_a_layer():
    # layer 2 is a C3k2 with bottlenecks at n/s and with C3k blocks at m/l/x (Ultralytics' parse_model)
    assert ultralytics_to_detkit_key("model.2.m.0.cv1.conv.weight", ultralytics_layout("yolo11", "s")) \
        == "backbone.stages.1.1.blocks.0.conv1.conv.weight"
    assert ultralytics_to_detkit_key("model.2.m.0.cv1.conv.weight", ultralytics_layout("yolo11", "m")) \
        == "backbone.stages.1.1.blocks.0.cv1.conv.weight"
    with pytest.raises(ConversionError, match="has no place in detkit's YOLO11 model"):
        ultralytics_to_detkit_key("model.2.m.0.cv3.conv.weight", ultralytics_layout("yolo11", "n"))


@pytest.mark.parametrize(("family", "scale"), [
    pytest.param(family, scale, marks=[pytest.mark.slow] if scale in "lx" else [])
    for family, scale in sorted(ULTRALYTICS_KEYS)])
def test_every_scale_round_trips_and_reads_back_its_family_and_scale(family, scale):
    torch.manual_seed(0)
    model = instantiate(load_config(ROOT / _config(family, scale)).model)
    state = model.state_dict()
    saved = to_ultralytics_state_dict(state, dtype=torch.float16, layout=ultralytics_layout(family, scale))
    assert len(saved) == ULTRALYTICS_KEYS[(family, scale)]  # Ultralytics' own entry count, DFL projection included
    assert (DFL_PROJECTION_KEY.replace("22", "23") in saved) == (family == "yolo11")
    weights = convert_ultralytics(saved)
    assert (weights.family, weights.scale, weights.num_classes) == (family, scale, 80)
    assert weights.reg_max == (16 if family == "yolo11" else 1) and required_overrides(weights) == []
    assert set(weights.state_dict) == set(state)
    for key, value in state.items():
        expected = value.half().float() if value.is_floating_point() else value
        assert torch.equal(weights.state_dict[key], expected), key
    model.load_state_dict(weights.state_dict, strict=True)


def test_yolo26_with_three_classes_and_its_config():
    weights = convert_ultralytics(family_ultralytics_state("yolo26", "n", "model.head.num_classes=3"), ["a", "b", "c"])
    assert (weights.family, weights.num_classes, weights.class_names) == ("yolo26", 3, ["a", "b", "c"])
    assert weights.model_name == "YOLO26n" and ultralytics_config("yolo26", "s") == "configs/yolo26s.py"
    assert required_overrides(weights) == ["model.head.num_classes=3"]
    assert ultralytics_config("yolo11", "x") == "configs/yolo11x_tal.py"
    # the config evaluates the one-to-one branch without NMS
    head = instantiate(load_config(ROOT / "configs/yolo26s.py").model).head
    assert head.branch == "one2one" and head.test_cfg["nms"] is False and head.test_cfg["max_per_img"] == 300


@pytest.mark.parametrize(("width", "blocks", "family", "scale"), [
    (16, 1, "yolo11", "n"), (32, 1, "yolo11", "s"), (64, 1, "yolo11", "m"), (64, 2, "yolo11", "l"),
    (96, 2, "yolo11", "x"), (64, 1, "yolo26", "m"), (64, 2, "yolo26", "l"), (48, 2, "yolov8", "m"),
])
def test_scale_from_stem_width_and_layer_2_blocks(width, blocks, family, scale):
    state = {"model.0.conv.weight": torch.zeros(width, 3, 3, 3),
             **{f"model.2.m.{k}.cv1.conv.weight": torch.zeros(1) for k in range(blocks)}}
    assert detect_scale(state, FAMILIES[family]) == scale


def test_yolo11_width_with_other_blocks_is_refused():
    state = {"model.0.conv.weight": torch.zeros(64, 3, 3, 3), "model.2.m.0.cv1.conv.weight": torch.zeros(1),
             "model.2.m.2.cv1.conv.weight": torch.zeros(1)}
    with pytest.raises(ConversionError, match=r"stem width 64 with 2 blocks in layer 2 is not a YOLO11 scale's|"
                                              r"stem width 64 with 3 blocks"):
        detect_scale({**state, "model.2.m.1.cv1.conv.weight": torch.zeros(1)}, FAMILIES["yolo11"])


def _yolo26_edited(change):
    state = family_ultralytics_state("yolo26")
    change(state)
    return state


def _drop(prefix):
    return lambda s: [s.pop(k) for k in [k for k in s if k.startswith(prefix)]]


@pytest.mark.parametrize(("change", "message"), [
    # YOLOv10: an end-to-end head on another layer set
    (lambda s: s.__setitem__("model.24.conv.weight", torch.zeros(1)), "end-to-end .* not YOLO26's .*YOLOv10"),
    # fused for inference: the one-to-many branch removed
    (_drop("model.23.cv2."), "no one-to-many branch"),
    (lambda s: s.__setitem__("model.23.dfl.conv.weight", torch.arange(16.0).view(1, 16, 1, 1)),
     r"'model.23.dfl.conv.weight' is not part of YOLO26's layer 23"),
    (lambda s: s.__setitem__("model.23.one2one_cv2.0.2.weight", torch.zeros(64, 16, 1, 1)),
     r"box branch \(one2one_cv2\) predicts 64 values per prior, expected 4 \(YOLO26"),
    (lambda s: s.__setitem__("model.22.m.0.2.cv1.conv.weight", torch.zeros(1)),
     r"not part of YOLO26's layer 22 \(C3k2 with attention\)"),
    (lambda s: s.__setitem__("model.23.cv4.0.0.conv.weight", torch.zeros(1)), "'cv4' weights"),
])
def test_bad_yolo26_weights_are_refused_with_the_reason(change, message):
    with pytest.raises(ConversionError, match=message):
        convert_ultralytics(_yolo26_edited(change))


def test_yolo11_without_dfl_or_with_yolov8_names_is_refused():
    state = family_ultralytics_state("yolo11")
    state.pop("model.23.dfl.conv.weight")
    with pytest.raises(ConversionError, match="no DFL box regression"):
        convert_ultralytics(state)
    state = family_ultralytics_state("yolo11")
    state["model.10.m.0.cv1.conv.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"not part of YOLO11's layer 10 \(C2PSA\)"):
        convert_ultralytics(state)
    with pytest.raises(ConversionError, match="YOLO11n weights, not YOLOv8's"):
        convert_yolov8(family_ultralytics_state("yolo11"))
