"""tools/test.py --analysis: the confusion matrix and errors by size of a trained checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "tests" / "engine" / "configs" / "tiny.py")


def test_analysis_writes_tables_that_account_for_every_gt(tmp_path, capsys):
    work = tmp_path / "work"
    assert load_tool("train").main([CFG, "--work-dir", str(work), "--cfg-options", "train.epochs=1",
                                    "train.multi_scale=None", "train.checkpoint.interval_iters=0"]) == 0
    out = tmp_path / "analysis"
    capsys.readouterr()
    rc = load_tool("test").main([CFG, str(work / "epoch_1.pth"), "--device", "cpu", "--no-progress",
                                 "--analysis", str(out), "--analysis-score-thr", "0"])
    assert rc == 0
    md = (out / "analysis.md").read_text()
    assert md in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"analysis.md", "confusion_matrix.png", "errors_by_size.png"}
    # the GT table's "all" row and the confusion matrix's class rows count the same GTs
    total = int(re.search(r"^\| all \| (\d+) \|", md, re.M).group(1))
    rows = re.findall(r"^\| (c\d) \| ([\d |]+) \|$", md, re.M)
    assert total > 0 and sum(int(v) for _, cells in rows for v in cells.split("|")) == total


def test_analysis_path_that_is_a_file_is_refused_first(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = load_tool("test").main([CFG, str(tmp_path / "missing.pth"), "--analysis", str(blocker)])
    assert rc == 2 and "--analysis" in capsys.readouterr().err
