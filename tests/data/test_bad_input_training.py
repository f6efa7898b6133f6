"""Issue #9, end to end: one training epoch over the bad-input corpus completes with finite
losses, and every skipped item is reported with its reason (decoding failures found in the
loader worker included)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from detkit.config import L, load_config
from detkit.data import LetterBox, Mosaic, RandomFlip, YoloDataset, load_class_names
from detkit.engine.trainer import Trainer

CFG = Path(__file__).resolve().parents[1] / "engine" / "configs" / "shapes_tiny.py"


@pytest.mark.slow
def test_one_epoch_over_the_bad_corpus(bad_corpus, tmp_path):
    cfg = load_config(CFG, ["model.head.num_classes=80", "train.epochs=1", "train.eval_interval=0",
                            "schedule.no_mosaic_last_epochs=0", "train.checkpoint.interval_iters=0"])
    cfg.data.train.dataset = L(YoloDataset)(
        img_dir=str(bad_corpus.img_dir), class_names=str(bad_corpus.names), max_size=256,
        pipeline=[L(Mosaic)(size=128), L(RandomFlip)(), L(LetterBox)(size=128)],
    )
    cfg.data.class_names = load_class_names(str(bad_corpus.names))  # the corpus' 80 (the start-up check)
    del cfg.data.val  # evaluation is off; the config's val set has the shapes' 5 classes
    cfg.data.train.num_workers = 1  # decoding failures are found in the worker process
    trainer = Trainer(cfg, work_dir=tmp_path)
    trainer.train()

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [v for r in records if r["kind"] == "train" for k, v in r.items() if k.startswith("loss")]
    assert len([r for r in records if r["kind"] == "train"]) == trainer.iters_per_epoch == 4
    assert losses and all(v is not None and math.isfinite(v) for v in losses)  # NaN is logged as null

    problems = trainer.train_set.problems
    assert dict(problems.counts) == dict(bad_corpus.yolo_index + bad_corpus.yolo_load)
    assert all(where and reason for where, reason in problems.records)
    log = (tmp_path / "train.log").read_text()
    assert "1 new problem(s) found while loading this epoch" in log
    assert "1 x image cannot be decoded" in log and "non-finite loss" not in log
