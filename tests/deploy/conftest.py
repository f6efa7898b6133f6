"""A small YOLOv4 with varied scores, its checkpoint and its ONNX exports, shared by the deploy tests.

A freshly initialised detector scores every prior alike (eval-mode BatchNorm with unit running
statistics shrinks the activations to ~1e-9), so the model here takes its BatchNorm statistics
from one pass over generated shapes images and spread-out head biases: about 100 detections per
image with distinct scores, which gives NMS and the score filter something to disagree about.
Its backbone and neck convolutions have non-negative weights: random-sign weights cancel, and
BatchNorm then magnifies the rounding error (measured: fp32 boxes 3e-3 px from fp64, against
4e-5 px for a trained model), which would test the model's conditioning rather than the export.
With them the fp32 error is a trained model's (8e-5 px).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from detkit.config import instantiate, load_config
from detkit.data.shapes import make_shape_image
from detkit.deploy import build_metadata, export_onnx, letterbox_from_config, letterbox_images
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
CFG = ROOT / "tests" / "deploy" / "configs" / "yolo_tiny.py"
SAMPLES = ROOT.parent / "shared" / "data" / "samples"


def build_varied_model(cfg) -> nn.Module:
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    preds = set(model.head.preds)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m not in preds:
            m.weight.data.abs_()
    letterbox = letterbox_from_config(cfg, model.size_divisor)
    calib = letterbox_images([make_shape_image(i, 256)[0] for i in range(4)], letterbox, bgr=False)["images"]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0  # running statistics = this one batch's
    model.train()
    with torch.no_grad():
        model(calib)
    gen = torch.Generator().manual_seed(1)
    for conv in model.head.preds:
        conv.bias.data.normal_(-3.0, 1.0, generator=gen)
    return model.eval()


@pytest.fixture(scope="session")
def deploy_cfg():
    return load_config(str(CFG))


@pytest.fixture(scope="session")
def varied_model(deploy_cfg) -> nn.Module:
    return build_varied_model(deploy_cfg)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, varied_model) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save({"model": varied_model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def onnx_plain(tmp_path_factory, checkpoint) -> Path:
    """Exported by tools/export.py (dynamic batch, no NMS), which also checks parity on export."""
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert load_tool("export").main([str(CFG), str(checkpoint), "--out", str(out), "--dynamic-batch"]) == 0
    return out


NMS_SCORE_THR = 0.03  # baked into the NMS graph: fewer than max_per_img survive, so rows are padded


@pytest.fixture(scope="session")
def onnx_nms(tmp_path_factory, deploy_cfg, varied_model) -> Path:
    """Exported through the Python API, NMS in the graph (score_thr 0.03), dynamic batch."""
    letterbox = letterbox_from_config(deploy_cfg, varied_model.size_divisor)
    meta = build_metadata(varied_model, letterbox, deploy_cfg.data.class_names, with_nms=True, dynamic_batch=True)
    meta.postprocess["score_thr"] = NMS_SCORE_THR
    return export_onnx(varied_model, tmp_path_factory.mktemp("onnx_nms") / "tiny_nms.onnx", meta)


def _assert_same(a: dict[str, Tensor], b: dict[str, Tensor], box_atol: float, score_atol: float) -> None:
    """Same detections of one image, up to the order among near-equal scores.

    Counts and the sorted (label, score) lists agree; every detection of ``a`` has a partner in
    ``b`` (same label, box within ``box_atol`` px, score within ``score_atol``) unless its score is
    tied with another detection of its class: among exactly equal scores (a uniform region such as
    the letterbox padding gives many) which box NMS and the top-k keep is implementation-defined.
    """
    assert len(a["scores"]) == len(b["scores"])
    for x, y in ((a, b), (b, a)):
        order = np.lexsort((x["scores"].numpy(), x["labels"].numpy()))
        other = np.lexsort((y["scores"].numpy(), y["labels"].numpy()))
        assert torch.equal(x["labels"][order], y["labels"][other])
        assert torch.allclose(x["scores"][order], y["scores"][other], rtol=0, atol=score_atol)
    free = np.ones(len(b["scores"]), bool)
    for box, score, label in zip(a["boxes"], a["scores"], a["labels"]):
        close = ((b["labels"] == label) & ((b["boxes"] - box).abs().amax(1) <= box_atol)
                 & ((b["scores"] - score).abs() <= score_atol)).numpy() & free
        if close.any():
            free[np.argmax(close)] = False
            continue
        tied = int(((a["labels"] == label) & ((a["scores"] - score).abs() <= score_atol)).sum())
        assert tied > 1, f"no partner for label {int(label)} box {box.tolist()} score {float(score)}"


@pytest.fixture
def same_detections() -> Callable[..., None]:
    def check(a: list[dict[str, Tensor]], b: list[dict[str, Tensor]], box_atol: float = 1e-3,
              score_atol: float = 1e-5) -> None:
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y, box_atol, score_atol)
    return check


@pytest.fixture(scope="session")
def sample_photos() -> list[np.ndarray]:
    """BGR frames of the sample photos (the test is skipped when they are absent)."""
    import cv2

    files = [SAMPLES / "bus.jpg", SAMPLES / "zidane.jpg"]
    if not all(f.is_file() for f in files):
        pytest.skip(f"sample photos not found under {SAMPLES}")
    return [cv2.imread(str(f)) for f in files]
