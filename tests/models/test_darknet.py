import numpy as np
import pytest
import torch
from torch import nn

from detkit.models import CSPDarknet
from detkit.models.darknet import (
    DarknetHeader,
    darknet_convs,
    load_darknet_weights,
    save_darknet_weights,
)

from .conftest import tiny_detector


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(model.parameters()) + [b for n, b in model.named_buffers() if "running" in n]:
            t.copy_(torch.rand(t.shape, generator=g) + 0.1)
    return model


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _small_csp(seed):
    return _randomise(CSPDarknet(widen_factor=0.125), seed)  # full depth: 72 convs


def test_backbone_round_trip(tmp_path):
    src, dst = _small_csp(1), _small_csp(2)
    assert not _same_state(src, dst)
    path = tmp_path / "csp.conv.weights"
    save_darknet_weights(darknet_convs(src), path, DarknetHeader(0, 2, 5, seen=32013312))
    header, n = load_darknet_weights(darknet_convs(dst), path, strict=True)
    assert n == 72 and header == DarknetHeader(0, 2, 5, 32013312)
    assert _same_state(src, dst)


def test_file_layout_bn_conv_then_bias_conv(tmp_path):
    model = tiny_detector(num_classes=2, deepen_factor=1.0)
    convs = darknet_convs(model)
    # 72 backbone + 20 neck convs before the first head (yolov4.conv.137), 110 in yolov4.cfg
    assert len(convs) == 110 and convs[92].conv.kernel_size == (3, 3)
    assert isinstance(convs[93], nn.Conv2d) and convs[93].out_channels == 3 * 7
    assert isinstance(convs[-1], nn.Conv2d) and convs[-1] is model.head.preds[2]
    path = tmp_path / "m.weights"
    save_darknet_weights(convs, path)
    raw = np.fromfile(path, dtype=np.float32)
    stem = convs[0]
    # header is 3 int32 + 1 int64 = 5 float32 slots; then bn bias, weight, mean, var, conv
    c = stem.conv.out_channels
    assert np.allclose(raw[5 : 5 + c], stem.bn.bias.detach().numpy())
    assert np.allclose(raw[5 + c : 5 + 2 * c], stem.bn.weight.detach().numpy())
    assert np.allclose(raw[5 + 4 * c : 5 + 4 * c + stem.conv.weight.numel()],
                       stem.conv.weight.detach().numpy().ravel())
    total = sum(sum(p.numel() for p in (
        [u.conv.weight, u.bn.weight, u.bn.bias, u.bn.running_mean, u.bn.running_var]
        if hasattr(u, "bn") else [u.weight, u.bias])) for u in convs)
    assert raw.size == 5 + total


def test_full_detector_round_trip_and_prefix_load(tmp_path):
    src, dst = (_randomise(tiny_detector(deepen_factor=1.0), seed) for seed in (3, 4))
    path = tmp_path / "full.weights"
    save_darknet_weights(darknet_convs(src), path)
    load_darknet_weights(darknet_convs(dst), path, strict=True)
    assert _same_state(src, dst)
    # a file holding only the backbone loads as a prefix (as yolov4.conv.137 does)
    prefix = tmp_path / "prefix.weights"
    save_darknet_weights(darknet_convs(_small_csp(5)), prefix)
    _, n = load_darknet_weights(darknet_convs(dst), prefix)
    assert n == 72
    assert torch.equal(dst.backbone.stem.conv.weight, _small_csp(5).stem.conv.weight)
    with pytest.raises(ValueError, match="loaded 72 convs"):
        load_darknet_weights(darknet_convs(dst), prefix, strict=True)


def test_old_header_has_int32_seen(tmp_path):
    path = tmp_path / "old.weights"
    src, dst = _small_csp(6), _small_csp(7)
    save_darknet_weights(darknet_convs(src), path, DarknetHeader(0, 1, 0, seen=7))
    assert path.stat().st_size == 4 * 4 + 4 * sum(
        sum(t.numel() for t in (u.bn.bias, u.bn.weight, u.bn.running_mean, u.bn.running_var,
                                u.conv.weight)) for u in darknet_convs(src))
    header, _ = load_darknet_weights(darknet_convs(dst), path, strict=True)
    assert header.seen == 7 and _same_state(src, dst)


def test_unknown_model_layout():
    with pytest.raises(ValueError, match="Darknet layer order"):
        darknet_convs(nn.Conv2d(1, 1, 1))
