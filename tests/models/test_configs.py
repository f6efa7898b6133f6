"""Every model config builds, runs forward, loss and backward on CPU at small widths."""

from pathlib import Path

import pytest
import torch

from detkit.assigners import ATSSAssigner, MaxIoUAssigner
from detkit.config import instantiate, load_config
from detkit.models import ASFF, FPN, PAN, CSPDarknet, Detector, ResNet
from tests.fixtures.tools import load_tool

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "common" / "models"
SMALL = {  # overrides that keep each config tiny; the structure is unchanged
    "yolov4.py": ["model.backbone.widen_factor=0.125", "model.backbone.deepen_factor=0.33"],
    "yolov4_tiny_cpu.py": [],
    "yolov4_asff.py": ["model.backbone.widen_factor=0.125", "model.backbone.deepen_factor=0.33"],
    "resnet50_fpn_yolo.py": ["model.neck.out_channels=32",
                             "model.head.feat_channels=32"],
}
PARTS = {
    "yolov4.py": (CSPDarknet, PAN),
    "yolov4_tiny_cpu.py": (CSPDarknet, PAN),
    "yolov4_asff.py": (CSPDarknet, ASFF),
    "resnet50_fpn_yolo.py": (ResNet, FPN),
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
    backbone_cls, neck_cls = PARTS[name]
    assert isinstance(model, Detector)
    assert isinstance(model.backbone, backbone_cls) and isinstance(model.neck, neck_cls)
    assert model.head.num_classes == 80 and isinstance(model.head.assigner, ATSSAssigner)
    model.train()
    losses = model.loss(_batch())
    assert {"loss_cls", "loss_obj", "loss_box"} <= set(losses)
    total = sum(v for k, v in losses.items() if k.startswith("loss_"))
    assert torch.isfinite(total) and total > 0
    total.backward()
    grads = [p.grad for p in model.head.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    dets = model.predict({"images": torch.rand(1, 3, 64, 96)})
    assert len(dets) == 1 and dets[0]["boxes"].shape[-1] == 4


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
