"""The loss pipeline's per-size statistics and the forced positives of MinPositives."""

from detkit.anchors import YOLOAnchorGenerator
from detkit.assigners import ATSSAssigner, MinPositives
from tests.models.test_yolo_loss import make_batch, pipeline, preds_with_obj

# a small (2 x 2 px, between prior centres), a medium (40 x 40) and a large (112 x 112) GT; GT 3 padding
GTS = [[[1.0, 1.0, 3.0, 3.0], [20.0, 20.0, 60.0, 60.0], [16.0, 16.0, 128.0, 128.0], [0.0, 0.0, 0.0, 0.0]]]


def run(assigner):
    priors, strides, counts = YOLOAnchorGenerator(base_sizes=[[(8, 8)]], strides=[8]).grid_priors([(16, 16)])
    batch = make_batch(GTS, [[0, 1, 0, 0]], [[True, True, True, False]])
    return pipeline(assigner=assigner)(preds_with_obj(1, 256), priors, strides, counts, batch)


def test_gts_and_unmatched_gts_by_size():
    out = run(ATSSAssigner(topk=9))
    assert [out[f"stat_num_gt_{s}"].item() for s in ("small", "medium", "large")] == [1, 1, 1]
    # ATSS: no candidate centre lies inside the 2 x 2 px GT
    assert [out[f"stat_gt_no_pos_{s}"].item() for s in ("small", "medium", "large")] == [1, 0, 0]
    assert out["stat_gt_no_pos"].item() == 1 and out["stat_num_gt"].item() == 3
    assert "stat_forced_pos" not in out  # only assigners that force positives report them


def test_forced_positives_are_counted():
    out = run(MinPositives(ATSSAssigner(topk=9)))
    assert out["stat_forced_pos"].item() == 1
    assert [out[f"stat_gt_no_pos_{s}"].item() for s in ("small", "medium", "large")] == [0, 0, 0]
    assert out["stat_gt_no_pos"].item() == 0
