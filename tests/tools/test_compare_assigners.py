import csv
import json
from pathlib import Path

import cv2

from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "engine" / "configs" / "shapes_tiny.py"


def test_compare_assigners_tables_pictures_and_histogram(tmp_path):
    tool = load_tool("compare_assigners")
    shapes = tmp_path / "shapes"
    out = tmp_path / "out"
    strict = "MaxIoUAssigner(pos_iou_thr=0.9, neg_iou_thr=0.9, match_low_quality=False)"
    rc = tool.main([str(CONFIG), "--assigners", "atss", "iou", "grid", strict,
                    "--images", "8", "--batch", "4", "--samples", "2", "--out", str(out),
                    "--cfg-options", f"data.val.dataset.root='{shapes}'"])
    assert rc == 0
    with open(out / "assigners.csv") as f:
        rows = {r["assigner"]: r for r in csv.DictReader(f)}
    assert list(rows)[:3] == ["atss", "iou", "grid"] and len(rows) == 4
    gt = json.loads((shapes / "annotations" / "instances_val.json").read_text())
    num_gt = sum(1 for a in gt["annotations"] if not a.get("iscrowd", 0))
    for r in rows.values():
        assert float(r["num_gt"]) == num_gt  # every GT of the 8 val images counted once
    # low-quality matching gives every GT at least its best prior
    assert float(rows["iou"]["pos_per_gt_min"]) >= 1 and float(rows["iou"]["gt_no_pos"]) == 0
    # a 0.9 IoU bar without low-quality matches leaves GTs unmatched, and the table says how many
    strict = rows["MaxIoUAssigner(pos_iou_thr=0.9, neg_iou_thr=0.9, match_low_quality=False)"]
    assert float(strict["gt_no_pos"]) > 0
    assert float(strict["gt_no_pos"]) == sum(float(strict[f"gt_no_pos_{s}"]) for s in ("small", "medium", "large"))
    assert float(strict["gt_no_pos"]) == sum(float(strict[f"gt_no_pos_level{i}"]) for i in range(3))
    for r in rows.values():  # positives split over levels add up
        assert sum(float(r[f"pos_level{i}"]) for i in range(3)) == float(r["num_pos"])
        assert abs(float(r["pos_per_gt_mean"]) * num_gt - float(r["num_pos"])) < 1e-2 * num_gt
    pictures = sorted(out.glob("assign_*.png"))
    assert len(pictures) == 2
    assert cv2.imread(str(pictures[0])).shape[:2] == (128, 4 * 128)  # 4 panels side by side
    assert (out / "positives_per_gt.png").stat().st_size > 0
    assert "| atss |" in (out / "assigners.md").read_text()


def test_unknown_assigner_name_is_a_clear_error(tmp_path, capsys):
    tool = load_tool("compare_assigners")
    rc = tool.main([str(CONFIG), "--assigners", "nosuch", "--out", str(tmp_path)])
    assert rc == 2
    assert "nosuch" in capsys.readouterr().err
