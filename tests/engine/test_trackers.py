"""Experiment trackers (runtime.loggers): a short training run logs the same metrics and assignment
statistics to MLflow's local file store and to an offline W&B run as to metrics.jsonl; --resume
continues the same tracked run. Each test skips when its package is not installed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from detkit.config import ConfigError, load_config
from detkit.engine.logging import MetricsWriter
from detkit.engine.trackers import build_trackers, flatten_params
from detkit.engine.trainer import Trainer

CFG = Path(__file__).parent / "configs" / "tiny.py"
SHORT = ["train.epochs=2", "train.multi_scale=None", "train.checkpoint.interval_iters=0"]


def _jsonl(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]


def _expected(work: Path, kind: str) -> dict[str, dict[int, float]]:
    """{name: {step: value}} of the finite numbers metrics.jsonl holds for ``kind``."""
    out: dict[str, dict[int, float]] = {}
    for rec in _jsonl(work):
        if rec["kind"] != kind:
            continue
        for k, v in rec.items():
            if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(k, {})[rec["step"]] = float(v)
    return out


def _mlflow_history(work: Path) -> tuple[object, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(work / "mlruns").resolve().as_uri())
    return client, (work / "mlflow_run_id").read_text().strip()


def test_mlflow_gets_the_same_metrics_params_and_plots(tmp_path):
    pytest.importorskip("mlflow")
    work = tmp_path / "run"
    Trainer(load_config(CFG, [*SHORT, "runtime.loggers=['mlflow']", "runtime.plot_interval=1"]), work_dir=work).train()
    client, run_id = _mlflow_history(work)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    for kind in ("train", "epoch", "val"):
        expected = _expected(work, kind)
        assert expected, kind
        for name in ("loss", "stat_pos_per_gt", "AP", "lr"):
            if name not in expected:
                continue
            got = {m.step: m.value for m in client.get_metric_history(run_id, f"{kind}/{name}")}
            assert got == pytest.approx(expected[name]), (kind, name)
    assert "stat_pos_per_gt" in _expected(work, "epoch")  # the assignment statistics are among them
    params = run.data.params
    assert params["train.epochs"] == "2" and params["model"] == "TinyDetector"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.py", "losses.png", "metrics.png", "assignment.png"} <= artifacts


def test_mlflow_resume_continues_the_same_run(tmp_path):
    pytest.importorskip("mlflow")
    work = tmp_path / "run"
    options = [*SHORT, "runtime.loggers=['mlflow']", "train.epochs=1"]
    Trainer(load_config(CFG, options), work_dir=work).train()
    client, run_id = _mlflow_history(work)
    Trainer(load_config(CFG, [*options, "train.epochs=2"]), work_dir=work, resume="auto").train()
    assert (work / "mlflow_run_id").read_text().strip() == run_id
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1
    steps = [m.step for m in client.get_metric_history(run_id, "epoch/loss")]
    assert sorted(steps) == [1, 2] and client.get_run(run_id).info.status == "FINISHED"


def _wandb_records(path: Path) -> list[bytes]:
    """The records of W&B's run file: a 7-byte ``:W&B`` header, then LevelDB's log format (32 KiB
    blocks of chunks, each with a 7-byte header: crc32c, length (2 bytes, little-endian), type
    1 full / 2 first / 3 middle / 4 last)."""
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    records, parts, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            parts = chunk
        elif kind in (3, 4):
            parts += chunk
        if kind in (1, 4):
            records.append(parts)
    return records


def test_wandb_offline_run_gets_the_same_metrics(tmp_path):
    pytest.importorskip("wandb")
    work = tmp_path / "run"
    Trainer(load_config(CFG, [*SHORT, "runtime.loggers=['wandb']"]), work_dir=work).train()
    run_dirs = list((work / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    run_id = (work / "wandb_run_id").read_text().strip()
    assert run_dirs[0].name.endswith(run_id)
    from wandb.proto import wandb_internal_pb2

    records = []
    for _ in range(300):  # W&B's service may still be writing the file when finish() returns
        records = []
        try:
            for data in _wandb_records(next(run_dirs[0].glob("*.wandb"))):
                records.append(wandb_internal_pb2.Record())
                records[-1].ParseFromString(data)
        except Exception:  # noqa: BLE001 - a record still being written
            records = []
        if any(rec.WhichOneof("record_type") == "exit" for rec in records):
            break
        time.sleep(0.1)
    logged: dict[str, dict[int, float]] = {}
    for rec in records:
        if rec.WhichOneof("record_type") != "history":
            continue
        row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item}
        counter = "iteration" if any(k.startswith("train/") for k in row) else "epoch"
        for k, v in row.items():
            if "/" in k and isinstance(v, (int, float)):
                logged.setdefault(k, {})[int(row[counter])] = float(v)
    for kind in ("train", "epoch", "val"):
        for name, values in _expected(work, kind).items():
            assert logged.get(f"{kind}/{name}") == pytest.approx(values), (kind, name)


def test_a_tracker_whose_package_is_missing_is_a_config_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now fails as when not installed
    with pytest.raises(ConfigError, match=r"the mlflow tracker needs the mlflow package: "
                                          r"pip install 'detkit\[mlflow\]'$"):
        build_trackers(["mlflow"], tmp_path)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the default tracker: skipped
    assert build_trackers(["tensorboard"], tmp_path) == []


def test_trackers_from_a_lazy_call_and_only_finite_numbers(tmp_path):
    from detkit.config import L

    class Recorder:
        def __init__(self, work_dir, resume=False, run_name=None, tag="x"):
            self.calls, self.tag = [], tag

        def log_params(self, params):
            self.calls.append(("params", dict(params)))

        def log_metrics(self, kind, step, values):
            self.calls.append((kind, step, dict(values)))

        def log_artifact(self, path):
            self.calls.append(("artifact", path.name))

        def close(self, failed=False):
            self.calls.append(("close", failed))

    [rec] = build_trackers([L(Recorder)(tag="y")], tmp_path, run_name="r")
    assert rec.tag == "y"
    writer = MetricsWriter(tmp_path, trackers=[rec])
    writer.log("train", 3, {"loss": 1.5, "flag": True, "bad": float("nan"), "name": "atss", "epoch": 1})
    writer.close(failed=True)
    assert rec.calls == [("train", 3, {"loss": 1.5, "epoch": 1.0}), ("close", True)]


def test_flatten_params_names_components_and_dotted_keys():
    from detkit.config import L

    class Part:
        def __init__(self, k=1):
            pass

    flat = flatten_params({"model": L(Part)(k=2), "train": {"epochs": 3, "steps": (8, 11)}})
    assert flat == {"model": "test_flatten_params_names_components_and_dotted_keys.<locals>.Part", "model.k": "2",
                    "train.epochs": "3", "train.steps": "(8, 11)"}
