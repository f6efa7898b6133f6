"""Pre- and post-processing shared by the PyTorch and ONNX paths; the graph NMS against torchvision's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detkit.coders import YOLOCoder
from detkit.config import ConfigDict, L
from detkit.data import LetterBox
from detkit.deploy import LetterboxSettings, letterbox_from_config, letterbox_images, padded_nms
from detkit.deploy.graph_nms import NonMaxSuppression
from detkit.models.postprocess import (
    class_scores,
    postprocess_decoded_single,
    postprocess_single,
    undo_letterbox_batch,
)


def test_letterbox_images_records_undo_the_placement():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[..., 0] = 255  # blue in BGR
    batch = letterbox_images([frame], LetterboxSettings((256, 256)))
    assert batch["images"].shape == (1, 3, 256, 256) and batch["images"].dtype == torch.float32
    assert batch["scale_factors"].tolist() == [[pytest.approx(1.28)] * 2] and batch["pads"].tolist() == [[0.0, 64.0]]
    assert batch["ori_sizes"].tolist() == [[100, 200]]
    assert batch["images"][0, :, 0, 0].tolist() == pytest.approx([114 / 255] * 3)  # top padding, grey
    assert batch["images"][0, :, 128, 128].tolist() == [0.0, 0.0, 1.0]  # RGB: blue last
    dets = [{"boxes": torch.tensor([[0.0, 64.0, 256.0, 192.0], [12.8, 76.8, 25.6, 89.6]])}]
    out = undo_letterbox_batch(dets, batch, (256, 256))[0]["boxes"]
    assert torch.allclose(out, torch.tensor([[0.0, 0.0, 200.0, 100.0], [10.0, 10.0, 20.0, 20.0]]), atol=1e-4)


def test_letterbox_top_left_without_scaleup():
    batch = letterbox_images([np.full((50, 40, 3), 7, np.uint8)],
                             LetterboxSettings((64, 96), pad_value=0, center=False, scaleup=False))
    assert batch["images"].shape == (1, 3, 64, 96) and batch["pads"].tolist() == [[0.0, 0.0]]
    assert batch["scale_factors"].tolist() == [[1.0, 1.0]]
    assert float(batch["images"][0, 0, 49, 39]) == pytest.approx(7 / 255) and float(batch["images"][0, 0, 50, 0]) == 0


def test_letterbox_settings_come_from_the_eval_pipeline():
    cfg = ConfigDict(data=ConfigDict(img_size=300, val=ConfigDict(dataset=ConfigDict(
        pipeline=[L(LetterBox)(size=300, pad_value=0, center=False)]))))
    assert letterbox_from_config(cfg, 32) == LetterboxSettings((320, 320), pad_value=0, center=False)
    assert letterbox_from_config(cfg, 32, img_size=(200, 330)).input_size == (224, 352)
    assert letterbox_from_config(ConfigDict(), 64) == LetterboxSettings((640, 640))
    with pytest.raises(ValueError, match="pad_value"):
        LetterboxSettings((32, 32), pad_value=300)


def _random_boxes(gen: torch.Generator, b: int, n: int) -> torch.Tensor:
    xy = torch.rand(b, n, 2, generator=gen) * 200
    return torch.cat([xy, xy + torch.rand(b, n, 2, generator=gen) * 60 + 4], -1)  # (B, N, 4) overlapping


@pytest.mark.parametrize("nms", [True, False])
@pytest.mark.parametrize("multi_label", [True, False])
@pytest.mark.parametrize(("nms_pre", "max_per_img"), [(30000, 300), (150, 40)])
def test_graph_nms_equals_batched_nms(multi_label, nms_pre, max_per_img, nms):
    gen = torch.Generator().manual_seed(0)
    boxes = _random_boxes(gen, 2, 300)
    # Distinct scores: pairs of equal score may leave a top-k in either order.
    scores = ((torch.randperm(2 * 300 * 4, generator=gen).float() + 1) / 2400).reshape(2, 300, 4) ** 3
    settings = dict(score_thr=0.05, nms_iou_thr=0.5, nms_pre=nms_pre, max_per_img=max_per_img,
                    multi_label=multi_label, nms=nms)
    num, det_boxes, det_scores, det_labels = padded_nms(boxes, scores, **settings)
    assert det_boxes.shape == (2, min(max_per_img, 1200), 4)
    for i in range(2):
        ref = postprocess_decoded_single(boxes[i], scores[i], **settings)
        n = int(num[i])
        assert n == len(ref["scores"]) and n > 20
        assert torch.equal(det_scores[i, :n], ref["scores"]) and torch.equal(det_labels[i, :n], ref["labels"])
        assert torch.equal(det_boxes[i, :n], ref["boxes"])
        assert bool((det_labels[i, n:] == -1).all()) and bool((det_scores[i, n:] == 0).all())


def test_nms_op_caps_boxes_per_class():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]]])
    scores = torch.tensor([[[0.9, 0.8, 0.7, 0.1], [0.2, 0.3, 0.0, 0.6]]])  # (B=1, C=2, N=4)
    sel = NonMaxSuppression.apply(boxes, scores, torch.tensor([2]), torch.tensor([0.5]), torch.tensor([0.15]))
    assert sorted(map(tuple, sel.tolist())) == [(0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 3)]


def test_raw_and_decoded_entry_points_agree():
    gen = torch.Generator().manual_seed(3)
    n, c = 200, 3
    centres = torch.rand(n, 2, generator=gen) * 160
    priors, strides = torch.cat([centres - 12, centres + 12], 1), torch.full((n,), 8.0)
    preds = torch.randn(n, 5 + c, generator=gen) * 2
    coder = YOLOCoder(scale_x_y=1.1)
    for multi_label in (True, False):
        raw = postprocess_single(preds[:, :4], preds[:, 5:], preds[:, 4], priors, strides, coder, score_thr=0.05,
                                 multi_label=multi_label)
        decoded = postprocess_decoded_single(coder.decode(priors, preds[:, :4], strides),
                                             class_scores(preds[:, 5:], preds[:, 4]),
                                             score_thr=0.05, multi_label=multi_label)
        assert len(raw["scores"]) > 10
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(raw[key], decoded[key])
    with pytest.raises(ValueError, match="must agree"):
        postprocess_decoded_single(torch.zeros(3, 4), torch.zeros(2, 1))


def test_without_nms_the_best_pairs_are_kept_overlaps_included():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]])
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.05, 0.6]])
    dets = postprocess_decoded_single(boxes, scores, score_thr=0.2, nms=False, max_per_img=3)
    assert dets["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7]) and dets["labels"].tolist() == [0, 0, 1]
    with_nms = postprocess_decoded_single(boxes, scores, score_thr=0.2, nms_iou_thr=0.5)
    assert with_nms["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])  # prior 1's class 0 suppressed


def test_metadata_of_models_exported_before_the_nms_setting_runs_nms():
    from detkit.deploy.metadata import DeployMetadata

    meta = DeployMetadata(class_names=["a"], letterbox=LetterboxSettings((32, 32)), size_divisor=32, strides=[32],
                          postprocess=dict(score_thr=0.1, nms_iou_thr=0.5, nms_pre=10, max_per_img=5, multi_label=True))
    old = {k: v for k, v in meta.to_props().items() if k != "nms"}  # as written before the setting existed
    assert DeployMetadata.from_props(old).postprocess["nms"] is True


def test_channel_first_metadata_versions_and_older_files():
    """Channel-first outputs are written as format_version 2 (a detkit without the layout refuses them); files
    without the key (format_version 1, every export before it) read as (B, N, 4) / (B, N, C); NMS graphs have
    no decoded outputs to lay out."""
    from detkit.deploy.metadata import DeployMetadata

    settings = dict(score_thr=0.1, nms_iou_thr=0.5, nms_pre=10, max_per_img=5, multi_label=True)
    common = dict(class_names=["a"], letterbox=LetterboxSettings((32, 32)), size_divisor=32, strides=[32],
                  postprocess=settings)
    new = DeployMetadata(**common, channels_first=True).to_props()
    assert new["format_version"] == "2" and new["channels_first"] == "true"
    assert DeployMetadata.from_props(new).channels_first is True
    old = DeployMetadata(**common).to_props()
    assert old["format_version"] == "1" and "channels_first" not in old
    assert DeployMetadata.from_props(old).channels_first is False
    with pytest.raises(ValueError, match="channels_first describes decoded outputs"):
        DeployMetadata(**common, with_nms=True, channels_first=True)


def test_channel_first_outputs_give_the_same_detections_as_priors_first(varied_model, deploy_cfg, sample_photos,
                                                                         tmp_path, same_detections):
    """One model exported in both layouts: OnnxDetector.predict reads either and returns the same detections."""
    from detkit.deploy import OnnxDetector, build_metadata, export_onnx, letterbox_from_config, letterbox_images

    pytest.importorskip("onnxruntime")
    letterbox = letterbox_from_config(deploy_cfg, 32)
    paths = {}
    for layout in (True, False):
        meta = build_metadata(varied_model, letterbox, dynamic_batch=True, channels_first=layout)
        paths[layout] = export_onnx(varied_model, tmp_path / f"cf_{layout}.onnx", meta)
    batch = letterbox_images(sample_photos, letterbox)
    first, flat = OnnxDetector(paths[True]), OnnxDetector(paths[False])
    assert first.run(batch["images"])["scores"].shape[1:] == (5, 4032)
    assert flat.run(batch["images"])["scores"].shape[1:] == (4032, 5)
    expected = varied_model.predict(batch)
    assert sum(len(d["scores"]) for d in expected) > 0
    same_detections(first.predict(batch), expected)
    same_detections(flat.predict(batch), expected)
