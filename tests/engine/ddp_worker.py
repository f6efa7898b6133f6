"""Run by test_distributed.py under torchrun (2 processes, gloo on CPU): train the tiny config a few
iterations, save this rank's final weights, evaluate with both ranks, write rank 0's metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from detkit.config import load_config
from detkit.engine.distributed import cleanup_distributed, exit_process, get_rank
from detkit.engine.trainer import Trainer

CFG = Path(__file__).parent / "configs" / "tiny.py"


def main(out: Path) -> None:
    cfg = load_config(CFG, ["train.epochs=1", "train.eval_interval=0", "train.multi_scale=None",
                            "train.sync_bn=True", "data.val.batch_size=3"])
    trainer = Trainer(cfg, work_dir=out / "work", device="cpu")
    trainer.train()
    rank = get_rank()
    torch.save(trainer.detector.state_dict(), out / f"rank{rank}.pth")
    metrics = trainer.evaluate()
    if rank == 0:
        torch.save(trainer.ema.module.state_dict(), out / "ema.pth")
        (out / "metrics.json").write_text(json.dumps(metrics))
    cleanup_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    exit_process(0)
