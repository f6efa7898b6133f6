"""Run by test_faults.py under torchrun (2 processes, gloo on CPU): rank 1 alone sees a NaN loss at
iteration 1 and rank 0 alone gets SIGTERM in iteration 2. Both ranks must skip iteration 1
together and stop together after iteration 2 (else DDP's all-reduce would hang); each rank writes
what it saw to ``<out>/rank<R>.json``."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path

from detkit.config import load_config
from detkit.engine.distributed import cleanup_distributed, exit_process, get_rank
from detkit.engine.trainer import Trainer, TrainingInterrupted
from tests.engine.standins import TinyDetector

CFG = Path(__file__).parent / "configs" / "tiny.py"


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    original = TinyDetector.loss
    calls = {"n": 0}

    def loss(self, batch):
        n = calls["n"]
        calls["n"] += 1
        result = original(self, batch)
        if rank == 1 and n == 1:
            result["loss_box"] = result["loss_box"] * math.nan
        if rank == 0 and n == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    TinyDetector.loss = loss
    cfg = load_config(CFG, ["train.epochs=2", "train.eval_interval=0", "train.multi_scale=None",
                            "data.train.batch_size=1", "train.nominal_batch=2", "train.checkpoint.interval_iters=0"])
    trainer = Trainer(cfg, work_dir=out / "work", device="cpu")
    report = {"exception": None}
    try:
        trainer.train()
    except TrainingInterrupted as e:
        report = {"exception": type(e).__name__, "checkpoint": str(e.checkpoint), "exit_code": e.exit_code}
    report.update(iter=trainer.iter, loss_total=trainer.guard.loss_total, ema_updates=trainer.ema.updates)
    (out / f"rank{get_rank()}.json").write_text(json.dumps(report))
    cleanup_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    exit_process(0)
