"""detkit.ablation: mean +- std over seeds, paired differences with intervals, training statistics."""

import math

import pytest

from detkit.ablation import AblationRow, RunRecord, summarise, to_markdown, training_statistics, write_summary
from detkit.evaluation.significance import t_quantile

ROWS = [AblationRow("ATSS", "a.py", "atss"), AblationRow("max-IoU", "a.py", "iou"),
        AblationRow("TAL", "b.py", "tal", vs="max-IoU")]


def rec(label, seed, ap, ap50=0.5, per_image=None, **stats):
    base = {"pos_per_gt": 5.0, "gt_no_pos_pct": 1.0, "gt_no_pos_small_pct": 3.0, "gt_no_pos_medium_pct": 0.0,
            "gt_no_pos_large_pct": 0.0, "forced_pct": math.nan}
    base.update(stats)
    return RunRecord(label=label, seed=seed, metrics={"AP": ap, "AP50": ap50, "AP75": 0.3, "APs": 0.2, "APm": 0.3,
                                                      "APl": 0.4}, stats=base,
                     not_found_pct={"small": 10.0, "medium": 5.0, "large": 2.0}, per_image_ap=per_image or {},
                     train_min=1.5)


def test_mean_std_and_paired_t_intervals():
    records = [rec("ATSS", s, ap) for s, ap in enumerate([0.60, 0.62, 0.61])]
    records += [rec("max-IoU", s, ap) for s, ap in enumerate([0.50, 0.54, 0.49])]
    records += [rec("TAL", s, ap) for s, ap in enumerate([0.55, 0.58, 0.56])]
    out = summarise(ROWS, records)
    assert out[0].mean["AP"] == pytest.approx(0.61) and out[0].std["AP"] == pytest.approx(0.01)
    assert out[0].vs is None and not out[0].differences
    d = [-0.10, -0.08, -0.12]  # max-IoU - ATSS per seed: mean -0.10, sd 0.02
    iv = out[1].differences["AP"]
    half = t_quantile(0.95, 2) * 0.02 / math.sqrt(3)
    assert (iv.mean, iv.low, iv.high) == pytest.approx((-0.10, -0.10 - half, -0.10 + half))
    assert iv.significant and out[1].vs == "ATSS" and sum(d) / 3 == pytest.approx(iv.mean)
    assert out[1].verdict.startswith("max-IoU - ATSS: -0.100 AP, 95% CI [")
    assert out[2].vs == "max-IoU" and out[2].differences["AP"].mean == pytest.approx(0.16 / 3)
    md = to_markdown(out)
    assert "| ATSS | 3 | 0.610 ± 0.010 |" in md
    assert "| max-IoU | ATSS | -0.100 [" in md and "] * |" in md
    assert "| 3.0 / 0.0 / 0.0 | - | 10.0 / 5.0 / 2.0 | 1.5 |" in md


def test_only_common_seeds_pair_and_one_seed_bootstraps_over_images():
    # TAL ran seed 0 only (an interrupted ablation): the pair rests on seed 0, over images
    records = [rec("ATSS", 0, 0.6, per_image={1: 0.5, 2: 0.7, 3: 0.9}), rec("ATSS", 1, 0.62),
               rec("max-IoU", 0, 0.5, per_image={1: 0.4, 2: 0.6, 3: 0.8}),
               rec("TAL", 0, 0.55, per_image={1: 0.4, 2: 0.6, 3: 0.8})]
    out = summarise(ROWS, records)
    iv = out[1].differences["AP"]
    assert iv.method == "bootstrap over images" and iv.n == 3
    assert iv.mean == pytest.approx(-0.1) and iv.low == pytest.approx(-0.1) and iv.high == pytest.approx(-0.1)
    assert out[1].differences["AP50"].n == 1 and math.isnan(out[1].differences["AP50"].low)
    assert out[2].differences["AP"].mean == pytest.approx(0.0)  # vs max-IoU, image by image


def test_training_statistics_over_all_epochs():
    epochs = [{"stat_pos_per_gt": 4.0, "stat_num_gt": 100, "stat_gt_no_pos": 4, "stat_num_gt_small": 20,
               "stat_gt_no_pos_small": 4, "stat_num_gt_medium": 50, "stat_gt_no_pos_medium": 0,
               "stat_num_gt_large": 30, "stat_gt_no_pos_large": 0},
              {"stat_pos_per_gt": 6.0, "stat_num_gt": 100, "stat_gt_no_pos": 2, "stat_num_gt_small": 20,
               "stat_gt_no_pos_small": 2, "stat_num_gt_medium": 50, "stat_gt_no_pos_medium": 0,
               "stat_num_gt_large": 30, "stat_gt_no_pos_large": 0, "stat_forced_pos": 3}]
    s = training_statistics(epochs)
    assert s["pos_per_gt"] == 5.0 and s["gt_no_pos_pct"] == 3.0 and s["gt_no_pos_small_pct"] == 15.0
    assert s["gt_no_pos_medium_pct"] == 0.0 and s["forced_pct"] == 1.5
    assert math.isnan(training_statistics([{"stat_pos_per_gt": 1.0}])["forced_pct"])


def test_records_round_trip_and_files(tmp_path):
    r = rec("ATSS", 2, 0.6, per_image={7: 0.25})
    assert RunRecord.from_json(r.to_json()) == r
    records = [r, rec("max-IoU", 2, 0.5)]
    text = write_summary(summarise(ROWS[:2], records), records, tmp_path, "head\n\n")
    assert text.startswith("head\n\n| row |") and (tmp_path / "ablation.md").read_text() == text
    assert (tmp_path / "runs.csv").read_text().count("\n") == 3
