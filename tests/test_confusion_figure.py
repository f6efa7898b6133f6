"""The confusion matrix figure: readable size, classes chosen when there are many, counts and shares."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detkit.evaluation import errors
from detkit.evaluation.errors import ErrorReport, analyse_errors, confusion_classes


def _report(confusion: np.ndarray) -> ErrorReport:
    c = confusion.shape[0] - 1
    return ErrorReport(class_names=[f"class {i}" for i in range(c)], confusion=confusion,
                       gt_outcomes=np.zeros((3, 4), np.int64), det_errors=np.zeros((3, 4), np.int64),
                       num_dets=np.zeros(3, np.int64), score_thr=0.25, fg_iou=0.5, bg_iou=0.1)


def test_few_classes_are_all_shown():
    assert confusion_classes(np.zeros((6, 6), np.int64)) == [0, 1, 2, 3, 4]


def test_many_classes_show_those_present_most_first():
    c = 100
    confusion = np.zeros((c + 1, c + 1), np.int64)
    for k in (3, 50, 97):
        confusion[k, k] = 5
    confusion[c, 20] = 1  # a class present only as a false detection
    assert confusion_classes(confusion) == [3, 20, 50, 97]
    confusion[:c, :c] += np.diag(np.arange(1, c + 1))  # every class present: GTs + detections 2 (k + 1) ...
    # ... (+ 10 for class 3, + 1 for class 20): the 80 with most are 20..99, in index order
    assert confusion_classes(confusion) == list(range(20, 100)) and errors.CONFUSION_MAX_CLASSES == 80


@pytest.mark.parametrize("normalize", [False, True])
def test_cells_hold_counts_or_row_shares(tmp_path, monkeypatch, normalize):
    # 2 classes: class 0 has 3 GTs (2 found, 1 missed), class 1 has 1 GT taken as class 0
    confusion = np.array([[2, 0, 1], [1, 0, 0], [0, 1, 0]], np.int64)
    saved = {}
    monkeypatch.setattr(errors._pyplot().Figure, "savefig", lambda fig, path, **kw: saved.setdefault("fig", fig))
    _report(confusion).plot_confusion(tmp_path / "cm.png", normalize=normalize)
    ax = saved["fig"].axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    if normalize:
        assert cells == {(0, 0): "0.67", (0, 2): "0.33", (1, 0): "1.00", (2, 1): "1.00"}
    else:
        assert cells == {(0, 0): "2", (0, 2): "1", (1, 0): "1", (2, 1): "1"}
    assert [t.get_text() for t in ax.get_yticklabels()] == ["class 0", "class 1", "background"]


def test_the_figure_of_80_present_classes_is_bounded(tmp_path):
    c = 80
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 3, (c + 1, c + 1)) + np.diag(np.full(c + 1, 20))
    path = _report(confusion).plot_confusion(tmp_path / "cm.png")
    h, w = cv2.imread(str(path)).shape[:2]
    assert h <= 1600 and w <= 1700  # the tools/test.py --analysis figure was 5456 x 4988 px


def test_analysis_plot_uses_the_bounded_figure(tmp_path):
    names = [f"c{i}" for i in range(90)]
    gt = {"images": [{"id": 1, "width": 900, "height": 900}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": i + 1, "bbox": [i * 9.0, 0.0, 8.0, 8.0],
                           "area": 64.0, "iscrowd": 0} for i in range(90)],
          "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    paths = analyse_errors(gt, []).plot(tmp_path)
    h, w = cv2.imread(str(paths[0])).shape[:2]
    assert paths[0].name == "confusion_matrix.png" and h <= 1600 and w <= 1700
