"""Two processes with gloo on CPU (torchrun): identical weights on both ranks, and 2-rank evaluation
equal to 1-process evaluation of the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detkit.config import load_config
from detkit.engine.inference import build_evaluator, evaluate_dataset
from detkit.engine.trainer import build_dataset
from tests.engine.standins import tiny_collate
from tests.fixtures.runs import run_torchrun

CFG = Path(__file__).parent / "configs" / "tiny.py"


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")
def test_two_rank_gloo_training_and_evaluation(tmp_path):
    proc = run_torchrun(Path(__file__).parent / "ddp_worker.py", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pth"), torch.load(tmp_path / "rank1.pth")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "work" / "epoch_1.pth").exists()  # rank 0 wrote the checkpoint
    two_rank = json.loads((tmp_path / "metrics.json").read_text())

    cfg = load_config(CFG)
    from tests.engine.standins import TinyDetector

    model = TinyDetector(num_classes=2, width=8)
    model.load_state_dict(torch.load(tmp_path / "ema.pth"))
    dataset = build_dataset(cfg, "val")
    one_rank, results = evaluate_dataset(model, dataset, build_evaluator(dataset), torch.device("cpu"),
                                         tiny_collate, batch_size=3, progress=False)
    assert len(results) == len(dataset)  # one detection per image, none duplicated
    assert one_rank == pytest.approx(two_rank, abs=1e-12)


def test_exit_process_without_a_group_is_sys_exit():
    from detkit.engine.distributed import exit_process

    with pytest.raises(SystemExit) as info:
        exit_process(3)
    assert info.value.code == 3
