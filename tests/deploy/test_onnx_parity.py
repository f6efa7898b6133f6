"""ONNX Runtime (CPU) against PyTorch: raw outputs, final detections, NMS inside the graph.

The NMS graph (fixture ``onnx_nms``) was exported with score_thr 0.03; PyTorch runs with the same
threshold when compared with it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detkit.data import LetterBox, ShapesDataset, collate
from detkit.deploy import DecodedOutputs, OnnxDetector, letterbox_from_config, letterbox_images
from detkit.deploy.onnx_runtime import decoded_priors_first
from detkit.models.postprocess import postprocess_decoded, undo_letterbox_batch

pytest.importorskip("onnxruntime")

TOL = 1e-4  # fp32 raw outputs: boxes in pixels, scores in (0, 1)
NMS_THR = 0.03  # the NMS graph's exported score_thr (conftest.NMS_SCORE_THR)


@pytest.mark.parametrize("batch", [1, 3])
def test_raw_outputs_match_pytorch_with_dynamic_batch(onnx_plain, varied_model, batch):
    runtime = OnnxDetector(onnx_plain)
    images = torch.rand(batch, 3, 256, 256, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        boxes, scores = DecodedOutputs(varied_model, channels_first=True)(images)
    got = runtime.run(images)
    assert got["boxes"].shape == (batch, 4, 4032) and got["scores"].shape == (batch, 5, 4032)
    np.testing.assert_allclose(got["boxes"], boxes.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(got["scores"], scores.numpy(), rtol=0, atol=TOL)


def test_raw_outputs_match_pytorch_on_sample_photos(onnx_plain, varied_model, deploy_cfg, sample_photos):
    batch = letterbox_images(sample_photos, letterbox_from_config(deploy_cfg, 32))
    with torch.no_grad():
        boxes, scores = DecodedOutputs(varied_model, channels_first=True)(batch["images"])
    got = OnnxDetector(onnx_plain).run(batch["images"])
    np.testing.assert_allclose(got["boxes"], boxes.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(got["scores"], scores.numpy(), rtol=0, atol=TOL)


def test_same_detections_on_sample_photos(onnx_plain, onnx_nms, varied_model, deploy_cfg, sample_photos,
                                          same_detections):
    batch = letterbox_images(sample_photos, letterbox_from_config(deploy_cfg, 32))
    expected = varied_model.predict(batch)
    assert [len(d["scores"]) for d in expected] == [100, 100]  # max_per_img: NMS and the cap had work to do
    same_detections(OnnxDetector(onnx_plain).predict(batch), expected)
    expected = varied_model.predict(batch, score_thr=NMS_THR)
    assert all(0 < len(d["scores"]) < 100 for d in expected)
    same_detections(OnnxDetector(onnx_nms).predict(batch), expected)
    h, w = sample_photos[0].shape[:2]
    assert float(expected[0]["boxes"][:, 2].max()) <= w and float(expected[0]["boxes"][:, 3].max()) <= h


def test_same_detections_on_shapes_through_the_eval_pipeline(tmp_path, onnx_plain, onnx_nms, varied_model,
                                                               same_detections):
    ds = ShapesDataset(str(tmp_path / "shapes"), "val", pipeline=[LetterBox(256)], num_train=0, num_val=3,
                       size=192, seed=0)
    batch = collate([ds[i] for i in range(len(ds))], size_divisor=32)
    expected = varied_model.predict(batch)
    assert sum(len(d["scores"]) for d in expected) > 100
    same_detections(OnnxDetector(onnx_plain).predict(batch), expected)
    same_detections(OnnxDetector(onnx_nms).predict(batch), varied_model.predict(batch, score_thr=NMS_THR))


def test_nms_graph_gives_the_batched_nms_boxes(onnx_plain, onnx_nms, sample_photos, deploy_cfg, same_detections):
    """In-graph NonMaxSuppression + top-k vs torchvision.batched_nms on the same decoded outputs."""
    plain, nms = OnnxDetector(onnx_plain), OnnxDetector(onnx_nms)
    batch = letterbox_images(sample_photos, letterbox_from_config(deploy_cfg, 32))
    raw = plain.run(batch["images"])
    settings = {**plain.metadata.postprocess, "score_thr": NMS_THR}
    reference = postprocess_decoded(*decoded_priors_first(raw, plain.metadata), **settings)
    reference = undo_letterbox_batch(reference, batch, (256, 256))
    same_detections(nms.predict(batch), reference, box_atol=1e-4, score_atol=1e-6)
    fewer = nms.predict(batch, score_thr=0.05)
    assert all(len(f["scores"]) < len(r["scores"]) and bool((f["scores"] > 0.05).all())
               for f, r in zip(fewer, reference))


def test_nms_graph_pads_and_sorts(onnx_nms, deploy_cfg, sample_photos):
    runtime = OnnxDetector(onnx_nms)
    batch = letterbox_images(sample_photos[:1] * 3, letterbox_from_config(deploy_cfg, 32))
    out = runtime.run(batch["images"])
    n = int(out["num_dets"][0])
    assert out["num_dets"].tolist() == [n, n, n] and 0 < n < 100  # batch of 3, same image
    assert out["det_boxes"].shape == (3, 100, 4) and out["det_labels"].dtype == np.int64
    assert np.all(np.diff(out["det_scores"][0, :n]) <= 0) and np.all(out["det_scores"][0, :n] > NMS_THR)
    assert np.all(out["det_labels"][:, n:] == -1) and np.all(out["det_scores"][:, n:] == 0)
    assert np.all(out["det_boxes"][:, n:] == 0) and np.all(out["det_labels"][:, :n] >= 0)
    np.testing.assert_array_equal(out["det_labels"][0], out["det_labels"][2])
