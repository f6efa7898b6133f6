import csv
from pathlib import Path
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "engine" / "configs" / "shapes_tiny.py"


def test_ablation_trains_each_assigner_and_writes_one_table(tmp_path):
    tool = load_tool("ablate_assigners")
    shapes = tmp_path / "shapes"
    rc = tool.main([str(CONFIG), "--assigners", "atss", "MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)",
                    "--work-dir", str(tmp_path / "abl"), "--no-progress", "--cfg-options", "train.epochs=1",
                    "train.checkpoint.interval_iters=0", f"data.train.dataset.root='{shapes}'",
                    f"data.val.dataset.root='{shapes}'"])
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "abl" / "ablation.csv")))
    assert [r["assigner"] for r in rows] == ["atss", "MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)"]
    for r in rows:
        assert 0.0 <= float(r["AP"]) <= float(r["AP50"]) <= 1.0
        assert float(r["pos_per_gt"]) > 0  # the training-time assignment statistics reached the table
        assert 0.0 <= float(r["gt_no_pos_pct"]) <= 100.0 and float(r["train_min"]) > 0
    # each run trained in its own folder with the assigner it was given
    dumped = (tmp_path / "abl" / "MaxIoUAssigner_pos_iou_thr=0.5_neg_iou_thr=0.4" / "config.py").read_text()
    assert "L(MaxIoUAssigner)(" in dumped and "ATSSAssigner" not in dumped
    assert "| atss |" in (tmp_path / "abl" / "ablation.md").read_text()
