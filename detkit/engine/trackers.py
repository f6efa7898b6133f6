"""Experiment trackers: where a run's metrics go besides the work dir's own files.

``runtime.loggers`` lists them, by name or as a lazy call with arguments::

    runtime = dict(loggers=["tensorboard", "mlflow"])
    runtime = dict(loggers=[L(MLflowTracker)(experiment="shapes", tracking_uri="http://mlflow:5000"),
                            L(WandbTracker)(project="detkit", mode="online")])

Every tracker gets what :class:`~detkit.engine.logging.MetricsWriter` records, under the same
names: per-iteration training values (``train/loss``, ``train/loss_cls``, ``train/lr``,
``train/stat_pos_per_gt``, ...), per-epoch means (``epoch/...``: losses and the assignment
statistics ``stat_*``) and evaluations (``val/AP``, ...); the merged config as parameters once
per run; and (where the tracker stores files) the config dump and PNG plots at the end.

- ``"tensorboard"`` (:class:`TensorBoardTracker`): events under ``<work_dir>/tb``; skipped with a
  log line when the ``tensorboard`` package is missing (it is the default).
- ``"mlflow"`` (:class:`MLflowTracker`, ``pip install 'detkit[mlflow]'``): a local file store under
  ``<work_dir>/mlruns`` unless ``tracking_uri`` says otherwise (``mlflow ui --backend-store-uri
  <work_dir>/mlruns``, with the full ``mlflow`` package, browses it).
- ``"wandb"`` (:class:`WandbTracker`, ``pip install 'detkit[wandb]'``): Weights & Biases, offline by
  default (files under ``<work_dir>/wandb``, uploaded later with ``wandb sync``).

The MLflow and W&B runs keep their id in the work dir (``mlflow_run_id``, ``wandb_run_id``), so
``--resume`` continues the same tracked run. A tracker asked for by name whose package is
missing is a config error naming the extra to install (:func:`detkit.extras.require`).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from detkit.extras import MissingExtraError, install_hint
from detkit.lazy import TARGET_KEY, ConfigDict, L, instantiate
from detkit.schema import SettingError

__all__ = ["TRACKER_PRESETS", "MLflowTracker", "TensorBoardTracker", "Tracker", "WandbTracker", "build_trackers",
           "finite_numbers", "flatten_params", "tracker_component"]

logger = logging.getLogger("detkit")


class Tracker(Protocol):
    """What :class:`~detkit.engine.logging.MetricsWriter` calls on each tracker (rank 0 only)."""

    def log_params(self, params: Mapping[str, str]) -> None:
        """The run's settings, once (flattened config keys -> text)."""

    def log_metrics(self, kind: str, step: int, values: Mapping[str, float]) -> None:
        """Finite numbers of one record: ``kind`` is ``"train"`` (step = iteration), ``"epoch"`` or
        ``"val"`` (step = epoch)."""

    def log_artifact(self, path: Path) -> None:
        """A file of the run (config dump, plots), where the tracker stores files."""

    def close(self, failed: bool = False) -> None:
        """End the tracked run (``failed``: training stopped with an error or a signal)."""


def flatten_params(node: Any, prefix: str = "") -> dict[str, str]:
    """Dotted config keys -> short text values (lazy calls as ``Class``, long values cut to 250 chars)."""
    out: dict[str, str] = {}
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if target is not None and prefix:
            out[prefix] = getattr(target, "__qualname__", str(target))
        for k, v in node.items():
            if k != "_target_":
                out.update(flatten_params(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    text = getattr(node, "__qualname__", None) if callable(node) else None
    out[prefix] = (text or repr(node))[:250]
    return out


def _run_id_file(work_dir: Path, name: str) -> Path:
    return work_dir / f"{name}_run_id"


def _read_run_id(work_dir: Path, name: str, resume: bool) -> str | None:
    """The tracked run to continue: the id the work dir holds, when resuming."""
    path = _run_id_file(work_dir, name)
    if not (resume and path.is_file()):
        return None
    return path.read_text(encoding="utf-8").strip() or None


def _import(module: str, extra: str) -> Any:
    from detkit.extras import require

    return require(module, f"runtime.loggers: the {extra} tracker")


class TensorBoardTracker:
    """TensorBoard event files under ``<work_dir>/tb`` (scalars ``<kind>/<name>``)."""

    def __init__(self, work_dir: str | os.PathLike, resume: bool = False, run_name: str | None = None) -> None:
        from detkit.extras import require

        purpose = "runtime.loggers: the tensorboard tracker"
        require("tensorboard", purpose)  # MissingExtraError when absent
        board = require("torch.utils.tensorboard", purpose, provider="tensorboard")
        self.writer: Any = board.SummaryWriter(str(Path(work_dir) / "tb"))

    def log_params(self, params: Mapping[str, str]) -> None:
        return None  # TensorBoard's hparams view wants metrics alongside; the config dump is config.py

    def log_metrics(self, kind: str, step: int, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(f"{kind}/{k}", v, step)

    def log_artifact(self, path: Path) -> None:
        return None

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class MLflowTracker:
    """An MLflow run (metrics ``<kind>/<name>`` with their step, config keys as parameters, the
    config dump and plots as artifacts) through ``MlflowClient``: no global MLflow state is set.

    Args:
        work_dir: the run's work dir (default store ``<work_dir>/mlruns``, the run id file).
        resume: continue the run whose id the work dir holds.
        run_name: the run's name in MLflow (default: the work dir's name).
        tracking_uri: another store or server (``sqlite:///mlflow.db``, ``http://host:5000``).
        experiment: experiment name, created when missing.
    """

    # MLflow's file store is "in maintenance mode" from MLflow 3.x on and refused unless this is set.
    _FILE_STORE_OPT_IN = "MLFLOW_ALLOW_FILE_STORE"
    _BATCH = 100  # MLflow accepts at most 100 params / 1000 metrics per log_batch call

    def __init__(self, work_dir: str | os.PathLike, resume: bool = False, run_name: str | None = None,
                 tracking_uri: str | None = None, experiment: str = "detkit") -> None:
        _import("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        self.work_dir = Path(work_dir)
        uri = tracking_uri or (self.work_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            os.environ.setdefault(self._FILE_STORE_OPT_IN, "true")
        self.client = MlflowClient(tracking_uri=uri)
        self.resumed = _read_run_id(self.work_dir, "mlflow", resume)
        if self.resumed is not None:
            self.run_id = self.resumed
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            found = self.client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
            self.run_id = self.client.create_run(exp_id, run_name=run_name or self.work_dir.name).info.run_id
            self.work_dir.mkdir(parents=True, exist_ok=True)
            _run_id_file(self.work_dir, "mlflow").write_text(self.run_id + "\n", encoding="utf-8")
        self.tracking_uri = uri

    def log_params(self, params: Mapping[str, str]) -> None:
        if self.resumed is not None:  # MLflow refuses to change a logged parameter
            return
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), self._BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + self._BATCH])

    @staticmethod
    def metric_name(kind: str, name: str) -> str:
        """``<kind>/<name>`` as MLflow accepts it: a per-class key ``AP/<class>`` becomes
        ``AP.<class>`` (the file store cannot hold ``val/AP`` and ``val/AP/cat`` side by side) and
        characters MLflow refuses become ``_``."""
        return f"{kind}/" + re.sub(r"[^\w\-. ]", "_", name.replace("/", "."))

    def log_metrics(self, kind: str, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(self.metric_name(kind, k), float(v), now, int(step)) for k, v in values.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


class WandbTracker:
    """A Weights & Biases run, offline by default (``<work_dir>/wandb``; ``wandb sync`` uploads it).

    Training values are plotted against ``iteration``, epoch means and evaluations against
    ``epoch`` (W&B's ``define_metric``), so the two step counters never clash.

    Args:
        work_dir: the run's work dir (W&B's files, the run id file).
        resume: continue the run whose id the work dir holds.
        run_name: the run's display name (default: the work dir's name).
        project / entity: where the run goes when synced.
        mode: ``"offline"`` (default), ``"online"`` or ``"disabled"``.
    """

    def __init__(self, work_dir: str | os.PathLike, resume: bool = False, run_name: str | None = None,
                 project: str = "detkit", entity: str | None = None, mode: str = "offline") -> None:
        wandb = _import("wandb", "wandb")
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        run_id = _read_run_id(self.work_dir, "wandb", resume)
        self.run = wandb.init(project=project, entity=entity, name=run_name or self.work_dir.name, mode=mode,
                              dir=str(self.work_dir), id=run_id, resume="allow" if run_id else None,
                              reinit="create_new",  # several runs in one process never share one
                              settings=wandb.Settings(console="off", quiet=True))  # leaves our stdout alone
        _run_id_file(self.work_dir, "wandb").write_text(self.run.id + "\n", encoding="utf-8")
        for counter, kinds in (("iteration", ("train",)), ("epoch", ("epoch", "val"))):
            self.run.define_metric(counter)
            for kind in kinds:
                self.run.define_metric(f"{kind}/*", step_metric=counter)

    def log_params(self, params: Mapping[str, str]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log_metrics(self, kind: str, step: int, values: Mapping[str, float]) -> None:
        counter = "iteration" if kind == "train" else "epoch"
        self.run.log({**{f"{kind}/{k}": v for k, v in values.items()}, counter: step})

    def log_artifact(self, path: Path) -> None:
        return None  # the run's files stay in the work dir; metrics and config are what W&B shows

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


# The short names runtime.loggers accepts, each the lazy call it stands for (expanded by tracker_component).
TRACKER_PRESETS: dict[str, ConfigDict] = {"tensorboard": L(TensorBoardTracker)(), "mlflow": L(MLflowTracker)(),
                                          "wandb": L(WandbTracker)()}


def tracker_component(value: str | Mapping[str, Any], key: str) -> ConfigDict:
    """An entry of ``runtime.loggers`` as a lazy call: a short name of :data:`TRACKER_PRESETS` expanded
    (the one place it is), a lazy call kept.

    Raises:
        SettingError: naming ``key``, for an unknown name or anything but a lazy call.
    """
    if isinstance(value, str):
        if value not in TRACKER_PRESETS:
            raise SettingError(key, f"unknown logger {value!r}; accepted: {', '.join(TRACKER_PRESETS)} or a lazy "
                                    f"call of a tracker class")
        return copy.deepcopy(TRACKER_PRESETS[value])
    if isinstance(value, Mapping) and TARGET_KEY in value:
        return ConfigDict(value)
    raise SettingError(key, f"expected a tracker name ({', '.join(TRACKER_PRESETS)}) or a lazy call of a tracker "
                            f"class, got {value!r}")


def build_trackers(specs: Sequence[str | Mapping[str, Any]], work_dir: str | os.PathLike, resume: bool = False,
                   run_name: str | None = None) -> list[Tracker]:
    """The trackers ``runtime.loggers`` names (:func:`tracker_component`), each given ``work_dir``,
    ``resume`` and ``run_name``.

    ``"tensorboard"`` without its package is skipped with a log line (it is the default); any
    other tracker whose package is missing raises :class:`~detkit.config.ConfigError`.
    """
    trackers: list[Tracker] = []
    for i, spec in enumerate(specs):
        key = f"runtime.loggers[{i}]"
        node = tracker_component(spec, key)
        try:
            trackers.append(instantiate(node, key, work_dir=work_dir, resume=resume, run_name=run_name))
        except MissingExtraError:
            if spec != "tensorboard":  # the default, named by its short name: optional
                raise
            logger.info(f"tensorboard not installed ({install_hint('tensorboard')}): no TensorBoard events")
    return trackers


def finite_numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The values a tracker can plot: finite ints and floats (bools and text left out)."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
