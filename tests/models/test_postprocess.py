import pytest
import torch

from detkit.coders import YOLOCoder
from detkit.models.postprocess import postprocess_single as postprocess_named
from detkit.models.postprocess import undo_letterbox

NEG = -12.0  # logit of ~6e-6: below any score threshold
POS = 9.0


def postprocess_single(preds, priors, strides, coder, **kwargs):
    """The coupled head's columns ``[box, obj, cls]`` through the named entry point."""
    return postprocess_named(preds[:, :4], preds[:, 5:], preds[:, 4], priors, strides, coder, **kwargs)


def _preds(n, c):
    p = torch.zeros(n, 5 + c)
    p[:, 4:] = NEG
    return p


def _priors(centres, size=16.0):
    c = torch.tensor(centres, dtype=torch.float32)
    return torch.cat([c - size / 2, c + size / 2], 1), torch.full((len(centres),), 8.0)


def test_one_confident_prior_gives_its_anchor_box():
    priors, strides = _priors([[4, 4], [12, 4], [20, 4]])
    preds = _preds(3, 2)
    preds[1, 4] = POS
    preds[1, 6] = POS
    det = postprocess_single(preds, priors, strides, YOLOCoder())
    assert torch.allclose(det["boxes"], torch.tensor([[4.0, -4.0, 20.0, 12.0]]))
    assert det["labels"].tolist() == [1]
    assert det["scores"].item() == pytest.approx(torch.sigmoid(torch.tensor(POS)).item() ** 2)


def test_nms_is_class_aware_and_multi_label():
    priors, strides = _priors([[4, 4], [5, 4]])  # nearly the same box
    preds = _preds(2, 3)
    preds[:, 4] = POS
    preds[0, 5] = POS  # class 0, best
    preds[1, 5] = 5.0  # class 0 again: suppressed
    preds[1, 7] = 4.0  # class 2: kept
    det = postprocess_single(preds, priors, strides, YOLOCoder())
    assert det["labels"].tolist() == [0, 2]
    single = postprocess_single(preds, priors, strides, YOLOCoder(), multi_label=False)
    assert single["labels"].tolist() == [0]  # prior 1's best class is 0, suppressed by prior 0


def test_caps_and_threshold():
    centres = [[8.0 * i + 4, 4.0] for i in range(10)]
    priors, strides = _priors(centres, size=4.0)  # disjoint boxes
    preds = _preds(10, 1)
    preds[:, 4] = POS
    preds[:, 5] = torch.linspace(-3, 3, 10)
    det = postprocess_single(preds, priors, strides, YOLOCoder(), max_per_img=4)
    assert len(det["scores"]) == 4 and torch.all(det["scores"][:-1] >= det["scores"][1:])
    det = postprocess_single(preds, priors, strides, YOLOCoder(), nms_pre=2)
    assert len(det["scores"]) == 2
    det = postprocess_single(preds, priors, strides, YOLOCoder(), score_thr=0.5)
    assert len(det["scores"]) == 5  # sigmoid(cls) > ~0.5 for the 5 positive logits


def test_nothing_above_threshold_gives_empty_result():
    priors, strides = _priors([[4, 4]])
    det = postprocess_single(_preds(1, 4), priors, strides, YOLOCoder())
    assert det["boxes"].shape == (0, 4) and det["labels"].dtype == torch.long


def test_bad_settings():
    priors, strides = _priors([[4, 4]])
    with pytest.raises(ValueError, match="score_thr"):
        postprocess_single(_preds(1, 1), priors, strides, YOLOCoder(), score_thr=1.5)
    with pytest.raises(ValueError, match="nms_iou_thr"):
        postprocess_single(_preds(1, 1), priors, strides, YOLOCoder(), nms_iou_thr=0.0)


def test_undo_letterbox():
    boxes = torch.tensor([[8.0, 16.0, 48.0, 36.0], [0.0, 0.0, 200.0, 200.0]])
    out = undo_letterbox(boxes, (0.5, 0.5), (8, 6), (50, 100))
    assert torch.allclose(out, torch.tensor([[0.0, 20.0, 80.0, 50.0], [0.0, 0.0, 100.0, 50.0]]))
    with pytest.raises(ValueError, match="positive"):
        undo_letterbox(boxes, (0, 1), (0, 0), (1, 1))
