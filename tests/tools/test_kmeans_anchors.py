import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
COCO128 = ROOT / ".." / "shared" / "data" / "coco128"
SCRIPT = ROOT / "tools" / "kmeans_anchors.py"

km = load_tool("kmeans_anchors")


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


def test_wh_iou_hand_computed():
    wh = np.array([[2.0, 2.0], [4.0, 1.0]])
    anchors = np.array([[2.0, 2.0], [1.0, 4.0]])
    # (4, 1) vs (2, 2): inter 2 x 1 = 2, union 4 + 4 - 2 = 6; (4, 1) vs (1, 4): inter 1, union 7.
    expected = np.array([[1.0, 2 / 6], [2 / 6, 1 / 7]])
    np.testing.assert_allclose(km.wh_iou(wh, anchors), expected)
    assert km.mean_best_iou(wh, anchors) == pytest.approx((1.0 + 2 / 6) / 2)


def test_kmeans_finds_obvious_clusters_sorted_by_area():
    rng = np.random.default_rng(0)
    truth = np.array([[100.0, 50.0], [10.0, 10.0], [30.0, 60.0]])
    wh = np.concatenate([c * rng.uniform(0.97, 1.03, size=(50, 2)) for c in truth])
    anchors = km.kmeans_iou(wh, 3, seed=1)
    np.testing.assert_allclose(anchors, truth[[1, 2, 0]], rtol=0.03)
    assert km.mean_best_iou(wh, anchors) > 0.93
    assert km.group_levels(anchors, 3)[0] == [(round(anchors[0, 0], 1), round(anchors[0, 1], 1))]


def test_kmeans_rejects_too_few_boxes_and_bad_grouping():
    with pytest.raises(ValueError, match="at least k=3"):
        km.kmeans_iou(np.ones((2, 2)), 3)
    with pytest.raises(ValueError, match="4 anchors do not split into 3 equal levels"):
        km.group_levels(np.ones((4, 2)), 3)


def test_the_tool_checks_num_levels_and_box_count_first(tmp_path, capsys):
    """The flags are the tool's to name (status 2, one line); the library functions stay ValueError."""
    ann = tmp_path / "instances_train.json"
    ann.write_text('{"images": [{"id": 1, "width": 100, "height": 100}], "categories": [{"id": 1, "name": "a"}], '
                   '"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}]}')
    assert km.main([str(ann), "--num", "4", "--levels", "3"]) == 2
    assert capsys.readouterr().err == "error: --num (4) must be a multiple of --levels (3)\n"
    assert km.main([str(ann), "--num", "3", "--levels", "3"]) == 2
    assert capsys.readouterr().err == (f"error: {ann}: 1 boxes of at least 2.0 px; k-means for --num 3 anchors "
                                       "needs at least 3\n")


def test_yolo_folder_letterbox_scaling(tmp_path):
    cv2 = pytest.importorskip("cv2")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "images" / "train").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "train" / "a.png"), np.zeros((100, 200, 3), np.uint8))
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n1 0.1 0.1 0.1 0.1\n")
    (tmp_path / "labels" / "train" / "empty.txt").write_text("")
    wh = km.yolo_sizes(tmp_path, 400)
    # Image 200x100 -> scale 2 at size 400: (0.25*200*2, 0.5*100*2) = (100, 100); (40, 20).
    np.testing.assert_allclose(wh, [[100.0, 100.0], [40.0, 20.0]])


def test_yolo_label_without_image_is_an_error(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "labels" / "x.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    out = run(str(tmp_path), "--format", "yolo")
    assert out.returncode == 2 and "x.txt" in out.stderr and "no readable image" in out.stderr


@pytest.mark.skipif(not COCO128.is_dir(), reason="coco128 not available")
def test_coco128_both_formats_beat_or_match_default_anchors():
    results = {}
    for fmt in ("coco", "yolo"):
        out = run(str(COCO128), "--format", fmt, "--json", "--restarts", "2")
        assert out.returncode == 0, out.stderr
        results[fmt] = json.loads(out.stdout)
    coco, yolo = results["coco"], results["yolo"]
    assert coco["boxes"] == yolo["boxes"] > 900  # same boxes whichever format they are read from
    assert coco["default_mean_best_iou"] == pytest.approx(yolo["default_mean_best_iou"], abs=1e-3)
    for r in (coco, yolo):
        assert len(r["anchors"]) == 3 and all(len(level) == 3 for level in r["anchors"])
        areas = [w * h for level in r["anchors"] for w, h in level]
        assert areas == sorted(areas)
        assert r["mean_best_iou"] > r["default_mean_best_iou"] > 0.5


@pytest.mark.skipif(not COCO128.is_dir(), reason="coco128 not available")
def test_text_output_lists_levels():
    out = run(str(COCO128 / "annotations" / "instances_train2017.json"), "--num", "6", "--levels", "2",
              "--restarts", "1")
    assert out.returncode == 0, out.stderr
    assert "level 0:" in out.stdout and "level 1:" in out.stdout and "level 2:" not in out.stdout
    assert "mean best IoU" in out.stdout and "default YOLOv4 COCO anchors" in out.stdout
