"""Train/inference samplers (reproducible from seed+epoch, resumable) and the metrics writer."""

from __future__ import annotations

import csv
import json

import torch

from detkit.engine.distributed import InferenceSampler, TrainSampler, all_gather_object, reduce_mean
from detkit.engine.logging import MetricsWriter
from detkit.engine.plots import plot_training


def test_train_sampler_reproducible_sharded_and_skippable():
    a = TrainSampler(10, seed=3, rank=0, world_size=1)
    a.set_epoch(2)
    first = list(a)
    a.set_epoch(2)
    assert list(a) == first and sorted(first) == list(range(10))
    a.set_epoch(3)
    assert list(a) != first
    a.set_epoch(2)
    a.skip(4)
    assert list(a) == first[4:] and len(a) == 6
    shards = [TrainSampler(7, seed=0, rank=r, world_size=2) for r in range(2)]
    for s in shards:
        s.set_epoch(0)
    got = [list(s) for s in shards]
    assert len(got[0]) == len(got[1]) == 4  # padded to a multiple of the world size
    assert set(got[0]) | set(got[1]) == set(range(7))


def test_inference_sampler_covers_each_index_once():
    parts = [list(InferenceSampler(7, rank=r, world_size=3)) for r in range(3)]
    assert parts == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(InferenceSampler(2, rank=2, world_size=3)) == []


def test_single_process_gather_and_reduce():
    assert all_gather_object({"a": 1}) == [{"a": 1}]
    assert reduce_mean({"x": torch.tensor(2.5)})["x"].item() == 2.5


def test_metrics_writer_jsonl_csv_history_and_plots(tmp_path):
    w = MetricsWriter(tmp_path)
    w.log("train", 5, {"loss": torch.tensor(1.5), "lr": 0.01})
    w.log_epoch(1, {"loss_cls": 1.0, "stat_pos_per_gt": 3.0})
    w.log_epoch(2, {"loss_cls": 0.5, "stat_pos_per_gt": 4.0, "AP": 0.2})
    w.close()
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert recs[0] == {"kind": "train", "step": 5, "loss": 1.5, "lr": 0.01}
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[0]["AP"] == "" and rows[1]["AP"] == "0.2"
    again = MetricsWriter(tmp_path)
    again.load_history()
    assert [r["epoch"] for r in again.epochs] == [1, 2]
    again.close()
    files = plot_training(again.epochs, tmp_path)
    assert sorted(p.name for p in files) == ["assignment.png", "losses.png", "metrics.png"]
    assert MetricsWriter(tmp_path / "off", enabled=False).epochs == [] and not (tmp_path / "off").exists()


def test_tensorboard_events_when_installed(tmp_path):
    import pytest

    pytest.importorskip("tensorboard")
    from detkit.engine.trackers import TensorBoardTracker

    w = MetricsWriter(tmp_path, trackers=[TensorBoardTracker(tmp_path)])
    w.log("train", 1, {"loss": 2.0})
    w.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    w.log("train", 2, {"loss": 1.0})  # logging after close still reaches the JSONL
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
