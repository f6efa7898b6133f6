"""Conv + BatchNorm fusion (detkit.models.fuse): outputs equal, the original untouched, no BatchNorm left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from detkit.config import instantiate, load_config
from detkit.models.fuse import fuse_conv_bn_, fused_copy
from detkit.models.layers import ConvBNAct, DepthwiseSeparableConv
from tests.models.test_configs import CONFIGS, SMALL

ROOT = Path(__file__).resolve().parents[2]


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so a wrong fold shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model


def _tensors(out: Any) -> list[Tensor]:
    """Every tensor in a (nested) model output, in a fixed order."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _tensors(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    if hasattr(out, "__dataclass_fields__"):
        return [t for k in out.__dataclass_fields__ for t in _tensors(getattr(out, k))]
    return []


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_close(fused: list[Tensor], ref: list[Tensor]) -> None:
    assert len(fused) == len(ref) and ref
    for a, b in zip(fused, ref):
        assert a.shape == b.shape
        scale = float(b.abs().max()) or 1.0
        assert float((a - b).abs().max()) <= 1e-4 * scale, (float((a - b).abs().max()), scale)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "resnet50_fpn_yolo.py" else n
                                  for n in sorted(SMALL)])
def test_fused_copy_equals_the_model_and_leaves_it_untouched(name):
    """YOLOv4 (anchor head, + ASFF, tiny), ResNet+FPN, YOLOv8, YOLOX, RTMDet (shared convs), YOLO11, YOLO26."""
    torch.manual_seed(0)
    model = _randomise_bn(instantiate(load_config(CONFIGS / name, SMALL[name]).model))
    model.train()
    before = _state(model)
    grads_before = {n: p.requires_grad for n, p in model.named_parameters()}
    x = torch.rand(2, 3, 64, 96)
    fused, pruned = fused_copy(model, prune_branches=False), fused_copy(model)
    assert model.training and not fused.training and not pruned.training  # the original's mode kept
    for copy_ in (fused, pruned):
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in copy_.modules())
    model.eval()
    with torch.no_grad():
        _assert_close(_tensors(fused(x)), _tensors(model(x)))  # every branch's raw maps
        _assert_close(_tensors(pruned.forward_decoded(x)), _tensors(model.forward_decoded(x)))
    after = _state(model)  # parameters and BN buffers identical, still trainable
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads_before
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_fused_detections_equal_and_the_original_still_trains():
    name = "yolov8s.py"
    torch.manual_seed(0)
    model = _randomise_bn(instantiate(load_config(CONFIGS / name, SMALL[name] + ["model.head.score_thr=0.4"]).model))
    with torch.no_grad():
        for conv in model.head.cls_preds:  # class scores near 0.5 rather than YOLOv8's initial 1e-4
            conv.bias.zero_()
    fused = fused_copy(model.train())
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        dets, dets_ref = fused.predict({"images": x}), model.eval().predict({"images": x})
    assert sum(len(d["scores"]) for d in dets_ref) > 0
    for d, r in zip(dets, dets_ref):  # the best detections equal (near-ties further down may swap under NMS)
        top, top_ref = d["scores"].sort(descending=True).values[:10], r["scores"].sort(descending=True).values[:10]
        torch.testing.assert_close(top, top_ref, atol=1e-4, rtol=0)
        best, best_ref = d["boxes"][d["scores"].argmax()], r["boxes"][r["scores"].argmax()]
        torch.testing.assert_close(best, best_ref, atol=1e-3, rtol=1e-4)
    model.train()
    loss = sum(v for k, v in model.loss(_batch()).items() if k.startswith("loss_"))
    loss.backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)


def _batch() -> dict[str, Tensor]:
    return dict(images=torch.rand(2, 3, 64, 96), gt_boxes=torch.tensor([[[10.0, 10, 40, 50]], [[50, 20, 90, 60]]]),
                gt_labels=torch.tensor([[1], [2]]), gt_mask=torch.tensor([[True], [True]]))


def test_rtmdet_shared_conv_is_fused_per_level_without_touching_the_others():
    name = "rtmdet_s.py"
    torch.manual_seed(0)
    model = _randomise_bn(instantiate(load_config(CONFIGS / name, SMALL[name]).model)).eval()
    convs = model.head.cls_convs
    assert convs[1][0].conv is convs[0][0].conv  # shared in the model
    shared = convs[0][0].conv.weight.detach().clone()
    fused = fused_copy(model)
    fconvs = fused.head.cls_convs
    assert fconvs[1][0].conv is not fconvs[0][0].conv  # each level folded its own BatchNorm
    assert not torch.equal(fconvs[1][0].conv.weight, fconvs[0][0].conv.weight)
    assert torch.equal(convs[0][0].conv.weight, shared)


def test_fold_is_exact_on_a_hand_made_unit():
    """A 1x1 conv with weight 2 and BN (mean 1, var 3, eps 1, gamma 4, beta 5): y = 4 (2x - 1) / 2 + 5 = 4x + 3."""
    unit = ConvBNAct(1, 1, 1, act="none")
    with torch.no_grad():
        unit.conv.weight.fill_(2.0)
        unit.bn.running_mean.fill_(1.0)
        unit.bn.running_var.fill_(3.0)
        unit.bn.eps = 1.0
        unit.bn.weight.fill_(4.0)
        unit.bn.bias.fill_(5.0)
    fused = fused_copy(unit).requires_grad_(False)
    assert isinstance(fused.bn, nn.Identity) and isinstance(unit.bn, nn.BatchNorm2d)
    assert fused.conv.weight.item() == 4.0 and fused.conv.bias.item() == 3.0
    x = torch.tensor([[[[0.0, 1.0, -2.5]]]])
    assert fused(x).tolist() == [[[[3.0, 7.0, -7.0]]]]


def test_depthwise_separable_and_sequential_pairs_fold():
    block = nn.Sequential(DepthwiseSeparableConv(4, 6, act="silu"), nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6))
    _randomise_bn(block).eval()
    fused = fused_copy(block)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert isinstance(fused[2], nn.Identity) and fused[1].bias is not None
    x = torch.randn(2, 4, 9, 7)
    with torch.no_grad():
        _assert_close([fused(x)], [block(x)])


def test_in_place_fusion_refuses_a_training_model_and_counts():
    unit = ConvBNAct(3, 4, 3)
    with pytest.raises(ValueError, match="eval mode"):
        fuse_conv_bn_(unit)
    assert fuse_conv_bn_(unit.eval()) == 1 and fuse_conv_bn_(unit) == 0


def test_a_model_compiled_in_place_gives_an_eager_fused_copy():
    unit = _randomise_bn(ConvBNAct(3, 4, 3)).eval()
    unit.compile(backend="eager")
    fused = fused_copy(unit)
    assert getattr(fused, "_compiled_call_impl", None) is None
    assert getattr(unit, "_compiled_call_impl", None) is not None


# ----- the branch inference does not read (YOLOv10's and YOLO26's one-to-one heads) ------------------------------

ONE2ONE = {  # a dual-branch head: YOLO26-n's network and a tiny YOLOv8 layout with YOLOv10's one-to-one branches
    "yolo26": (CONFIGS / "yolo26.py", []),
    "yolov10": (ROOT / "tests" / "engine" / "configs" / "shapes_tiny_one2one.py", []),
}


def _dual(name: str, options: list[str] | None = None) -> nn.Module:
    path, base = ONE2ONE[name]
    torch.manual_seed(0)
    model = _randomise_bn(instantiate(load_config(path, base + (options or [])).model))
    with torch.no_grad():  # class scores around 0.5 (not the initial ~1e-4), so detections pass a 0.3 threshold
        for branch in model.head.branches:
            for conv in model.head._branch_modules(branch)["cls_preds"]:
                conv.bias.zero_()
    return model.eval()


def _conv_calls(model: nn.Module, x: Tensor) -> int:
    """Conv2d forwards run by one ``forward_decoded`` of ``model``."""
    calls = [0]

    def count(*_: Any) -> None:
        calls[0] += 1

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.forward_decoded(x)
    for h in hooks:
        h.remove()
    return calls[0]


def _head_convs(head: nn.Module, branch: str) -> int:
    return sum(isinstance(m, nn.Conv2d) for part in head._branch_modules(branch).values() for m in part.modules())


@pytest.mark.parametrize("name", sorted(ONE2ONE))
def test_one2one_copy_drops_the_one2many_branch_with_outputs_bit_identical(name):
    model = _dual(name, ["model.head.score_thr=0.3"])
    before = _state(model)
    full, pruned = fused_copy(model, prune_branches=False), fused_copy(model)
    assert model.head.branches == full.head.branches == ("one2many", "one2one")
    assert pruned.head.branches == ("one2one",) and pruned.head.dropped_branches == ("one2many",)
    k = model.head.level_channels
    assert pruned.head.out_channels == [k] * 3 and full.head.out_channels == [2 * k] * 3
    o2m = _head_convs(full.head, "one2many")
    assert o2m > 0 and not any(p for p in pruned.head._branch_modules("one2many").values())
    x = torch.rand(2, 3, 64, 96)
    assert _conv_calls(pruned, x) == _conv_calls(full, x) - o2m  # the one-to-many convs no longer run
    with torch.no_grad():
        raw, raw_full = pruned(x), full(x)
        for a, b in zip(raw, raw_full):  # the raw maps: the one-to-one channels, bit for bit
            assert torch.equal(a, b[:, k:])
        for a, b in zip(pruned.forward_decoded(x), full.forward_decoded(x)):
            assert torch.equal(a, b)
        dets, dets_full = pruned.predict({"images": x}), full.predict({"images": x})
    assert sum(len(d["scores"]) for d in dets_full) > 0
    for d, r in zip(dets, dets_full):
        assert d.keys() == r.keys() and all(torch.equal(d[key], r[key]) for key in d)
    after = _state(model)  # the training weights untouched, both branches kept
    assert after.keys() == before.keys() and all(torch.equal(after[key], before[key]) for key in before)
    with pytest.raises(ValueError, match="'one2many' branch was dropped.*prune_branches=False"):
        pruned.predict({"images": x}, branch="one2many")
    with pytest.raises(ValueError, match="'one2many' branch was dropped"):
        pruned.head.loss(raw, _batch())


def test_copy_of_a_one2many_reading_head_drops_the_one2one_branch():
    """``--cfg-options model.head.branch=one2many model.head.nms=True``: the copy keeps what that branch needs."""
    model = _dual("yolov10", ["model.head.branch=one2many", "model.head.nms=True", "model.head.score_thr=0.3"])
    full, pruned = fused_copy(model, prune_branches=False), fused_copy(model)
    assert pruned.head.branches == ("one2many",) and pruned.head.one2one_branch is None
    x = torch.rand(2, 3, 64, 96)
    assert _conv_calls(pruned, x) == _conv_calls(full, x) - _head_convs(full.head, "one2one")
    with torch.no_grad():
        k = model.head.level_channels
        assert all(torch.equal(a, b[:, :k]) for a, b in zip(pruned(x), full(x)))
        dets, dets_full = pruned.predict({"images": x}), full.predict({"images": x})
    assert sum(len(d["scores"]) for d in dets_full) > 0
    for d, r in zip(dets, dets_full):
        assert all(torch.equal(d[key], r[key]) for key in d)


def test_an_unpruned_copy_keeps_both_branches_losses():
    model = _dual("yolov10")
    full = fused_copy(model, prune_branches=False)
    x = _batch()
    with torch.no_grad():
        losses, ref = full.head.loss(full(x["images"]), x), model.head.loss(model(x["images"]), x)
    assert {"loss_cls", "loss_o2o_cls"} <= losses.keys() == ref.keys()
    for key in ref:
        if key.startswith("loss_"):
            torch.testing.assert_close(losses[key], ref[key], atol=1e-4, rtol=1e-4)


def test_keep_branches_refuses_to_drop_the_branch_inference_reads():
    head = _dual("yolov10").head
    with pytest.raises(ValueError, match="would drop 'one2one', the branch inference reads"):
        head.keep_branches_(("one2many",))
    with pytest.raises(ValueError, match="has no 'one2few' branch"):
        head.keep_branches_(("one2one", "one2few"))
    head.keep_branches_(("one2many", "one2one"))  # both kept: nothing changes
    assert head.branches == ("one2many", "one2one") and head.dropped_branches == ()


def test_single_branch_heads_are_not_pruned():
    name = "yolov8s.py"
    model = instantiate(load_config(CONFIGS / name, SMALL[name]).model).eval()
    pruned = fused_copy(model)
    assert pruned.head.branches == ("one2many",) and pruned.head.dropped_branches == ()
    assert _state(pruned).keys() == _state(fused_copy(model, prune_branches=False)).keys()
