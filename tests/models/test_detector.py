import pytest
import torch

from detkit.anchors import YOLOAnchorGenerator
from detkit.coders import YOLOCoder
from detkit.models import PAN, CSPDarknet, Detector, YOLOHead

from .conftest import tiny_head


def test_yolov4_has_darknet_parameter_count():
    model = Detector(CSPDarknet("yolov4"), PAN(),
                     YOLOHead(80, prior_generator=YOLOAnchorGenerator(), coder=YOLOCoder()))
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 64.36e6) / 64.36e6 < 0.01
    assert n == 64_363_101


@pytest.mark.parametrize("hw", [(320, 320), (416, 416), (608, 608), (640, 640), (256, 416),
                                (64, 96)])
def test_output_shapes_per_level(detector, hw):
    detector.eval()
    with torch.no_grad():
        raw = detector(torch.zeros(1, 3, *hw))
    assert [tuple(r.shape) for r in raw] == [(1, 24, hw[0] // s, hw[1] // s) for s in (8, 16, 32)]


@pytest.mark.parametrize("hw", [(65, 96), (64, 100)])
def test_non_multiple_input_is_rejected(detector, hw):
    with pytest.raises(ValueError, match=rf"{hw[0]}x{hw[1]}.*stride 32"):
        detector(torch.zeros(1, 3, *hw))


def test_mismatched_prior_strides_are_rejected():
    head = YOLOHead(3, prior_generator=YOLOAnchorGenerator(strides=[4, 8, 16]), coder=YOLOCoder())
    with pytest.raises(ValueError, match="strides"):
        Detector(CSPDarknet(widen_factor=0.125, deepen_factor=0.33), PAN(), head)


def test_predict_undoes_letterbox(detector):
    # Input 64x96; original image 40x100 (h, w) resized by 0.8 to 32x80, padded (8, 16).
    raw = [torch.zeros(1, 24, 8, 12), torch.zeros(1, 24, 4, 6), torch.zeros(1, 24, 2, 3)]
    for r in raw:
        r.view(1, 3, 8, *r.shape[-2:])[:, :, 4:] = -12.0  # every obj / cls logit off
    # level 1 (stride 16), row 1, column 2, anchor 1 (32x24): box (24, 12, 56, 36) in input px
    raw[1].view(1, 3, 8, 4, 6)[0, 1, 4, 1, 2] = 9.0  # objectness
    raw[1].view(1, 3, 8, 4, 6)[0, 1, 7, 1, 2] = 9.0  # class 2
    detector.forward = lambda images: raw
    batch = {
        "images": torch.zeros(1, 3, 64, 96),
        "scale_factors": torch.tensor([[0.8, 0.8]]),
        "pads": torch.tensor([[8.0, 16.0]]),
        "ori_sizes": torch.tensor([[40, 100]]),
    }
    (det,) = detector.predict(batch)
    assert det["labels"].tolist() == [2]
    # ((24-8)/0.8, (12-16)/0.8 -> clipped to 0, (56-8)/0.8, (36-16)/0.8)
    assert torch.allclose(det["boxes"], torch.tensor([[20.0, 0.0, 60.0, 25.0]]))
    assert det["scores"].item() == pytest.approx(torch.sigmoid(torch.tensor(9.0)).item() ** 2)
    (plain,) = detector.predict({"images": batch["images"]})
    assert torch.allclose(plain["boxes"], torch.tensor([[24.0, 12.0, 56.0, 36.0]]))


def test_predict_of_real_model_is_well_formed(detector):
    detector.eval()
    dets = detector.predict({"images": torch.rand(2, 3, 64, 64)}, score_thr=0.00005)
    assert len(dets) == 2
    for d in dets:  # initial scores are ~0.01 * 0.01: above 5e-5 everywhere
        assert len(d["scores"]) > 0
        assert d["boxes"].shape[1] == 4 and len(d["scores"]) == len(d["labels"]) <= 300
        assert d["labels"].max() < 3


def test_forward_backward(detector):
    detector.train()
    raw = detector(torch.rand(2, 3, 64, 96))
    sum(r.square().mean() for r in raw).backward()
    assert all(p.grad is not None for p in detector.parameters() if p.requires_grad)


def test_head_without_neck():
    backbone = CSPDarknet(deepen_factor=0.33, widen_factor=0.125)
    model = Detector(backbone, None, tiny_head())
    assert model.head.in_channels == backbone.out_channels
    assert len(model(torch.zeros(1, 3, 64, 64))) == 3


def test_predict_maps_each_image_with_its_own_letterbox(detector):
    raw = [torch.full((2, 24, 8, 12), -12.0), torch.full((2, 24, 4, 6), -12.0),
           torch.full((2, 24, 2, 3), -12.0)]
    for r in raw:
        r.view(2, 3, 8, *r.shape[-2:])[:, :, :4] = 0.0
    # the same prior fires in both images: level 0, row 3, column 5, anchor 2 (24x24)
    raw[0].view(2, 3, 8, 8, 12)[:, 2, 4, 3, 5] = 9.0
    raw[0].view(2, 3, 8, 8, 12)[:, 2, 5, 3, 5] = 9.0
    detector.forward = lambda images: raw
    batch = {
        "images": torch.zeros(2, 3, 64, 96),
        "scale_factors": torch.tensor([[1.0, 1.0], [0.5, 0.25]]),
        "pads": torch.tensor([[0.0, 0.0], [4.0, 8.0]]),
        "ori_sizes": torch.tensor([[64, 96], [400, 400]]),
    }
    d0, d1 = detector.predict(batch)
    box = torch.tensor([[32.0, 16.0, 56.0, 40.0]])  # centre (44, 28), size 24
    assert torch.allclose(d0["boxes"], box)
    assert torch.allclose(d1["boxes"], torch.tensor([[56.0, 32.0, 104.0, 128.0]]))
    assert d0["labels"].tolist() == d1["labels"].tolist() == [0]


def test_channel_first_decode_of_an_anchor_head_is_the_transposed_default(detector):
    """YOLOHead (three anchors per location, a coder without a channel-first form): the exported layout
    holds the default's values, transposed."""
    detector.eval()
    images = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        boxes, scores = detector.forward_decoded(images)
        cf_boxes, cf_scores = detector.forward_decoded(images, channels_first=True)
    n = 3 * (12 * 16 + 6 * 8 + 3 * 4)
    assert boxes.shape == (2, n, 4) and cf_boxes.shape == (2, 4, n) and cf_scores.shape == (2, 3, n)
    assert torch.equal(cf_boxes, boxes.transpose(1, 2)) and torch.equal(cf_scores, scores.transpose(1, 2))
