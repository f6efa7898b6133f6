"""tools/ablate_assigners.py: paired seeds, one table with intervals, several configs, resuming."""

import csv
import json
from pathlib import Path

import pytest

from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "engine" / "configs" / "shapes_tiny.py"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def options(shapes):
    return ["train.epochs=1", "train.checkpoint.interval_iters=0", f"data.train.dataset.root='{shapes}'",
            f"data.val.dataset.root='{shapes}'"]


def test_two_assigners_two_seeds_then_read_back_and_resume(tmp_path, capsys):
    tool = load_tool("ablate_assigners")
    work = tmp_path / "abl"
    argv = [str(CONFIG), "--assigners", "atss", "MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)", "--seeds", "2",
            "--work-dir", str(work), "--no-progress", "--cfg-options", *options(tmp_path / "shapes")]
    assert tool.main(argv) == 0
    iou_dir = work / "MaxIoUAssigner_pos_iou_thr=0.5_neg_iou_thr=0.4"
    for seed in (0, 1):  # each run trained with its row's assigner and its seed
        dumped = (iou_dir / f"seed{seed}" / "config.py").read_text()
        assert "L(MaxIoUAssigner)(" in dumped and "ATSSAssigner" not in dumped and f"seed={seed}," in dumped
    runs = _read_csv(work / "runs.csv")
    assert [(r["row"], r["seed"]) for r in runs] == [("atss", "0"), ("MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)",
                                                                    "0"), ("atss", "1"), (runs[3]["row"], "1")]
    for r in runs:
        assert 0.0 <= float(r["AP"]) <= float(r["AP50"]) <= 1.0
        assert float(r["pos_per_gt"]) > 0 and float(r["train_min"]) > 0 and float(r["train_cpu_min"]) > 0
        assert 0.0 <= float(r["gt_no_pos_small_pct"]) <= 100.0 and 0.0 <= float(r["not_found_small_pct"]) <= 100.0
    assert isinstance(json.loads((work / "atss" / "seed0" / "val_results.json").read_text()), list)
    assert "| size | GTs | detected |" in (work / "atss" / "seed0" / "errors.md").read_text()
    rows = _read_csv(work / "ablation.csv")
    assert [r["row"] for r in rows] == ["atss", "MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)"]
    aps = [float(r["AP"]) for r in runs]
    assert float(rows[0]["AP_mean"]) == pytest.approx((aps[0] + aps[2]) / 2, abs=1e-5)
    # the paired difference over the two seeds
    d = [aps[1] - aps[0], aps[3] - aps[2]]
    assert float(rows[1]["dAP_mean"]) == pytest.approx(sum(d) / 2, abs=1e-5)
    assert rows[1]["vs"] == "atss" and rows[1]["interval_over"] == "t over seeds" and rows[0]["vs"] == ""
    md = (work / "ablation.md").read_text()
    assert "- MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4) - atss: " in md and "t over seeds, n=2)" in md

    # read back: nothing retrains
    stamp = (work / "atss" / "seed1" / "result.json").stat().st_mtime_ns
    log = (work / "atss" / "seed0" / "train.log").read_text()
    assert tool.main(argv) == 0
    assert (work / "atss" / "seed1" / "result.json").stat().st_mtime_ns == stamp
    assert (work / "atss" / "seed0" / "train.log").read_text() == log
    # an interrupted run (no result yet, a checkpoint left) continues from its checkpoint
    (work / "atss" / "seed1" / "result.json").unlink()
    assert tool.main(argv) == 0
    assert "resumed from" in (work / "atss" / "seed1" / "train.log").read_text()
    assert (work / "atss" / "seed1" / "result.json").is_file()
    # --only-seeds 0 of 3: seed 0 read back, seed 1 (finished elsewhere) read back, seed 2 left alone
    log_1 = (work / "atss" / "seed1" / "train.log").read_text()
    assert tool.main([*argv[:5], "3", "--only-seeds", "0", *argv[6:]]) == 0
    assert (work / "atss" / "seed1" / "train.log").read_text() == log_1 and not (work / "atss" / "seed2").exists()
    assert [r["seeds"] for r in _read_csv(work / "ablation.csv")] == ["0 1", "0 1"]
    # changed options: the old runs are refused, not mixed in
    capsys.readouterr()
    assert tool.main([*argv[:-1], "schedule.lr.warmup_iters=1", argv[-1]]) == 2
    assert "holds a run of another config" in capsys.readouterr().err


def test_spec_rows_with_their_own_options(tmp_path, capsys):
    tool = load_tool("ablate_assigners")
    spec = tmp_path / "abl.toml"
    spec.write_text(f"""
seeds = 1
cfg_options = {json.dumps(options(tmp_path / 'shapes'))}
[[rows]]
config = "{CONFIG}"
assigner = "config"
label = "own"
[[rows]]
config = "{CONFIG}"
assigner = "grid+minpos"
label = "grid, min 1 positive"
""")
    work = tmp_path / "w"
    assert tool.main(["--spec", str(spec), "--work-dir", str(work), "--no-progress"]) == 0
    md = (work / "ablation.md").read_text()
    assert "MinPositives(assigner=GridAssigner(" in md
    # one seed: the AP difference's interval is a bootstrap over the val images
    rows = _read_csv(work / "ablation.csv")
    assert rows[1]["interval_over"] == "bootstrap over images" and rows[1]["vs"] == "own"
    assert float(rows[1]["dAP_low"]) <= float(rows[1]["dAP_mean"]) <= float(rows[1]["dAP_high"])
    runs = _read_csv(work / "runs.csv")
    assert float(runs[1]["forced_pct"]) >= 0 and runs[0]["forced_pct"] == "nan"


def test_box_only_rule_on_the_yolov8_head_needs_no_target_override(tmp_path, capsys):
    """The head's cls_target="auto" follows the rule; an explicit "assigner" with a box-only rule is
    refused when the config loads, before any run folder exists."""
    tool = load_tool("ablate_assigners")
    cfg = str(ROOT / "configs" / "shapes_yolov8_tal.py")
    row = tool.AblationRow(label="atss", config=cfg, assigner="atss")
    loss = tool.run_config(row, 0, []).model.head.loss
    assert loss.cls_target == "auto" and loss.assigner["_target_"].__name__ == "ATSSAssigner"
    rc = tool.main([cfg, "--assigners", "atss", "--work-dir", str(tmp_path / "w"),
                    "--cfg-options", "model.head.loss.cls_target=assigner"])
    err = capsys.readouterr().err
    assert rc == 2 and "cls_target='assigner' needs a rule" in err and not (tmp_path / "w").exists()


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0", "c.py"], "argument --seeds: must be an integer >= 1, got '0'"),
    (["--spec", "missing.toml"], "no such file"),
])
def test_usage_errors(argv, message, capsys):
    assert load_tool("ablate_assigners").main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ('{"rows": [{"config": "c.py"}]}', "rows[0]: needs config and assigner"),
    ('{"seed": 3, "rows": []}', "unknown key(s) ['seed']"),
    ('{"rows": [', "cannot read it"),
])
def test_bad_json_specs(tmp_path, text, message, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(text)
    assert load_tool("ablate_assigners").main(["--spec", str(spec)]) == 2
    assert message in capsys.readouterr().err
