"""Loader processes capped at the CPUs available to the process, with a log line; never raised."""

from __future__ import annotations

import logging

import pytest

from detkit.config import load_config
from detkit.engine import builders
from detkit.engine.evaluate import val_loader_options


@pytest.mark.parametrize(("requested", "cpus", "expected"), [(8, 2, 2), (2, 2, 2), (0, 2, 0), (3, 16, 3)])
def test_workers_capped_at_available_cpus(requested: int, cpus: int, expected: int, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(builders, "available_cpus", lambda: cpus)
    with caplog.at_level(logging.INFO, logger="detkit"):
        assert builders.loader_workers(requested, "data.train.num_workers") == expected
    said = [r.getMessage() for r in caplog.records]
    if requested > cpus:
        assert said == [f"data.train.num_workers={requested} but {cpus} CPU(s) are available to this process: "
                        f"{cpus} loader workers"]
    else:
        assert said == []


def test_val_options_of_a_coco_config_on_a_two_cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config("configs/yolov8n_tal.py")  # data.train 8 workers, data.val 4 (a GPU machine's numbers)
    monkeypatch.setattr(builders, "available_cpus", lambda: 2)
    assert val_loader_options(cfg) == {"batch_size": cfg.data.val.batch_size, "num_workers": 2}
    monkeypatch.setattr(builders, "available_cpus", lambda: 64)
    assert val_loader_options(cfg)["num_workers"] == cfg.data.val.num_workers
