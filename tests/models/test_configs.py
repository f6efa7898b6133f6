"""Every model config builds, runs forward, loss and backward on CPU at small widths."""

from pathlib import Path

import pytest
import torch

from detkit.assigners import (
    ATSSAssigner,
    DynamicSoftLabelAssigner,
    MaxIoUAssigner,
    SimOTAAssigner,
    TaskAlignedAssigner,
)
from detkit.config import instantiate, load_config
from detkit.models import ASFF, CSPPAN, FPN, PAN, CSPDarknet, Detector, ResNet
from detkit.models.backbones.cspnext import CSPNeXt
from detkit.models.necks.cspnext_pafpn import CSPNeXtPAFPN
from tests.fixtures.tools import load_tool

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "common" / "models"
SMALL = {  # overrides that keep each config tiny; the structure is unchanged
    "yolov4.py": ["model.backbone.widen_factor=0.125", "model.backbone.deepen_factor=0.33"],
    "yolov4_tiny_cpu.py": [],
    "yolov4_asff.py": ["model.backbone.widen_factor=0.125", "model.backbone.deepen_factor=0.33"],
    "resnet50_fpn_yolo.py": ["model.neck.out_channels=32",
                             "model.head.feat_channels=32"],
    "yolov8s.py": ["model.backbone.scale=None", "model.backbone.widen_factor=0.125",
                   "model.backbone.deepen_factor=0.33"],
    "yolox_s.py": ["model.backbone.scale=None", "model.backbone.widen_factor=0.125",
                   "model.backbone.deepen_factor=0.33", "model.head.stem_channels=16"],
    "yolo11.py": [],  # YOLO11-n
    "yolo26.py": [],  # YOLO26-n
    "rtmdet_s.py": ["model.backbone.scale=None", "model.backbone.widen_factor=0.125",
                    "model.backbone.deepen_factor=0.33", "model.neck.out_channels=16", "model.head.cls_channels=16",
                    "model.head.box_channels=16"],
}
PARTS = {  # backbone, neck, assigner, loss keys
    "yolov4.py": (CSPDarknet, PAN, ATSSAssigner, {"loss_cls", "loss_obj", "loss_box"}),
    "yolov4_tiny_cpu.py": (CSPDarknet, PAN, ATSSAssigner, {"loss_cls", "loss_obj", "loss_box"}),
    "yolov4_asff.py": (CSPDarknet, ASFF, ATSSAssigner, {"loss_cls", "loss_obj", "loss_box"}),
    "resnet50_fpn_yolo.py": (ResNet, FPN, ATSSAssigner, {"loss_cls", "loss_obj", "loss_box"}),
    "yolov8s.py": (CSPDarknet, CSPPAN, TaskAlignedAssigner, {"loss_cls", "loss_box", "loss_dfl"}),
    "yolox_s.py": (CSPDarknet, CSPPAN, SimOTAAssigner, {"loss_cls", "loss_obj", "loss_box", "loss_reg"}),
    "yolo11.py": (CSPDarknet, CSPPAN, TaskAlignedAssigner, {"loss_cls", "loss_box", "loss_dfl"}),
    "yolo26.py": (CSPDarknet, CSPPAN, TaskAlignedAssigner, {"loss_cls", "loss_box", "loss_reg", "loss_o2o_cls",
                                                            "loss_o2o_box", "loss_o2o_reg"}),
    "rtmdet_s.py": (CSPNeXt, CSPNeXtPAFPN, DynamicSoftLabelAssigner, {"loss_cls", "loss_box"}),
}


def _batch():
    return dict(
        images=torch.rand(2, 3, 64, 96),
        gt_boxes=torch.tensor([[[10.0, 10, 40, 50], [0, 0, 0, 0]], [[50, 20, 90, 60], [5, 5, 30, 30]]]),
        gt_labels=torch.tensor([[1, 0], [3, 7]]),
        gt_mask=torch.tensor([[True, False], [True, True]]),
    )


def test_every_config_is_covered():
    assert sorted(p.name for p in CONFIGS.glob("*.py")) == sorted(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_config_builds_and_trains_one_step(name):
    cfg = load_config(CONFIGS / name, SMALL[name])
    model = instantiate(cfg.model)
    backbone_cls, neck_cls, assigner_cls, loss_keys = PARTS[name]
    assert isinstance(model, Detector)
    assert isinstance(model.backbone, backbone_cls) and isinstance(model.neck, neck_cls)
    assert model.head.num_classes == 80 and isinstance(model.head.assigner, assigner_cls)
    model.train()
    losses = model.loss(_batch())
    assert {k for k in losses if k.startswith("loss_")} == loss_keys
    total = sum(v for k, v in losses.items() if k.startswith("loss_"))
    assert torch.isfinite(total) and total > 0
    total.backward()
    grads = [p.grad for p in model.head.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    dets = model.predict({"images": torch.rand(1, 3, 64, 96)})
    assert len(dets) == 1 and dets[0]["boxes"].shape[-1] == 4


def test_yolov8s_config_has_ultralytics_parameter_counts():
    model = instantiate(load_config(CONFIGS / "yolov8s.py").model)
    assert sum(p.numel() for p in model.backbone.parameters()) == 5_079_712  # Ultralytics 8.4.190, layers 0-9
    # Ultralytics: 11,166,560 with the 16 fixed DFL projection weights detkit keeps as a constant.
    assert sum(p.numel() for p in model.parameters()) == 11_166_560 - 16


def test_yolox_s_config_has_yolox_parameter_count():
    model = instantiate(load_config(CONFIGS / "yolox_s.py").model)
    total = sum(p.numel() for p in model.parameters())
    assert total == 8_968_255 and abs(total - 8.97e6) / 8.97e6 < 0.01  # YOLOX-s: 8.97M


def test_yolov4_config_is_the_darknet_model():
    model = instantiate(load_config(CONFIGS / "yolov4.py").model)
    assert sum(p.numel() for p in model.parameters()) == 64_363_101
    assert model.head.coder.scale_x_y > 1.0


def test_assigner_swap_by_override_and_property():
    cfg = load_config(CONFIGS / "yolov4_tiny_cpu.py", [
        "model.head.loss.assigner=MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)",
        "model.head.num_classes=20",
    ])
    model = instantiate(cfg.model)
    assert isinstance(model.head.assigner, MaxIoUAssigner)
    assert model.head.preds[0].out_channels == 3 * 25
    model.head.assigner = ATSSAssigner(topk=9)
    assert model.head.loss_pipeline.assigner is model.head.assigner


def test_model_info_tool(capsys):
    tool = load_tool("model_info")
    assert tool.main([str(CONFIGS / "yolov4_tiny_cpu.py"), "--size", "64", "96"]) == 0
    out = capsys.readouterr().out
    assert "params:" in out and "GFLOPs @ 64x96" in out
    model = instantiate(load_config(CONFIGS / "yolov4_tiny_cpu.py").model)
    info = tool.model_info(model, 64, 96)
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["params_backbone"] + info["params_neck"] + info["params_head"] == info["params"]
    # FLOPs scale with the number of pixels (every counted op is a conv)
    assert tool.count_flops(model, 128, 96) == 2 * tool.count_flops(model, 64, 96)
    assert tool.main([str(CONFIGS / "yolov4_tiny_cpu.py"), "--size", "65"]) == 2
