"""tools/export.py on a YOLO26-layout model (one-to-one head, ``nms=False``): no NonMaxSuppression op in either
graph, the decoded graph is the one-to-one branch, and the detections graph (``--with-nms``) gives PyTorch's
NMS-free detections (``select_top_pairs``: the top ``max_per_img`` (prior, class) scores)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from detkit.config import instantiate, load_config
from detkit.data.shapes import make_shape_image
from detkit.deploy import OnnxDetector, letterbox_from_config, letterbox_images
from tests.fixtures.tools import load_tool

pytest.importorskip("onnxruntime")
CFG = Path(__file__).resolve().parent / "configs" / "yolo26_tiny.py"


@pytest.fixture(scope="module")
def model_and_images():
    """The tiny YOLO26 with BatchNorm statistics from shapes images and spread-out biases (a fresh model
    scores every prior alike), and 2 letterboxed shapes images. As in conftest's ``build_varied_model``, the
    backbone, neck and branch convs get non-negative weights: with random signs the fp32 boxes are 0.09 px from
    fp64 (3e-5 px with them), which would test the model's conditioning rather than the export."""
    cfg = load_config(str(CFG))
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    head = model.head
    preds = {conv for branch in head.branches for part, convs in head._branch_modules(branch).items()
             if part.endswith("_preds") for conv in convs}
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m not in preds:
            m.weight.data.abs_()
    letterbox = letterbox_from_config(cfg, model.size_divisor)
    images = letterbox_images([make_shape_image(i, 256)[0] for i in range(4)], letterbox, bgr=False)["images"]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(images)
        gen = torch.Generator().manual_seed(1)
        for branch in head.branches:
            for conv in head._branch_modules(branch)["cls_preds"]:
                conv.bias.normal_(-3.0, 1.0, generator=gen)
    return model.eval(), images[:2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model_and_images):
    model, _ = model_and_images
    folder = tmp_path_factory.mktemp("yolo26_export")
    ckpt = folder / "tiny26.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    tool = load_tool("export")  # each export checks its ONNX Runtime outputs against PyTorch's (exit 1 if not)
    assert tool.main([str(CFG), str(ckpt), "--out", str(folder / "plain.onnx"), "--dynamic-batch"]) == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert tool.main([str(CFG), str(ckpt), "--out", str(folder / "dets.onnx"), "--with-nms",
                          "--dynamic-batch"]) == 0
    assert "no NonMaxSuppression op: the head is one-to-one (nms=False); the graph keeps the top 100 (prior, " \
           "class) scores above 0.001" in printed.getvalue()
    return folder / "plain.onnx", folder / "dets.onnx"


def test_no_nms_op_in_either_graph(exported):
    plain, dets = (onnx.load(str(p)) for p in exported)
    assert "NonMaxSuppression" not in {n.op_type for n in plain.graph.node}
    assert "NonMaxSuppression" not in {n.op_type for n in dets.graph.node}
    assert "TopK" in {n.op_type for n in dets.graph.node}
    props = {p.key: json.loads(p.value) for p in dets.metadata_props if p.key in ("nms", "max_per_img", "outputs")}
    assert props == {"nms": False, "max_per_img": 100, "outputs": ["num_dets", "det_boxes", "det_scores", "det_labels"]}


def test_decoded_graph_is_the_one_to_one_branch(exported, model_and_images):
    model, images = model_and_images
    out = OnnxDetector(exported[0]).run(images)
    with torch.no_grad():
        boxes, scores = model.forward_decoded(images, channels_first=True)  # the exported layout
        model.head.branch = "one2many"
        other = model.forward_decoded(images, channels_first=True)[1]
        model.head.branch = "one2one"
    assert torch.allclose(torch.from_numpy(out["boxes"]), boxes, atol=1e-3, rtol=0)
    assert torch.allclose(torch.from_numpy(out["scores"]), scores, atol=1e-5, rtol=0)
    assert (other - scores).abs().max() > 0.01  # the branches differ: the right one was exported


def test_detections_graph_gives_pytorchs_nms_free_detections(exported, model_and_images, same_detections):
    model, images = model_and_images
    got = OnnxDetector(exported[1]).run(images)
    with torch.no_grad():
        expected = model.predict({"images": images})
    assert [len(d["scores"]) for d in expected] == got["num_dets"].tolist() == [100, 100]  # max_per_img pass
    onnx_dets = [{"boxes": torch.from_numpy(got["det_boxes"][b]), "scores": torch.from_numpy(got["det_scores"][b]),
                  "labels": torch.from_numpy(got["det_labels"][b])} for b in range(2)]
    # same detections up to the order among equal scores (the letterbox padding gives ties)
    same_detections(onnx_dets, expected)
    # tools/infer's runtime path gives the same detections from the decoded graph
    same_detections(OnnxDetector(exported[0]).predict({"images": images.numpy()}), expected)
