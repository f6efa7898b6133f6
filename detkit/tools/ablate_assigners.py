"""Train the same model with each assigner, over several seeds; one table with intervals.

    python tools/ablate_assigners.py configs/shapes_atss.py --assigners atss iou grid tal --seeds 3 \
        [--cfg-options train.epochs=8 ...] [--work-dir work_dirs/ablation/shapes] [--no-progress]
    python tools/ablate_assigners.py configs/shapes_atss.py configs/shapes_yolov8_tal.py --assigners atss tal
    python tools/ablate_assigners.py --spec docs/ablations/shapes.toml          # rows with their own options

Rows: each config (positional, or ``--configs``) with each of ``--assigners`` (short names of
:mod:`detkit.assigners.presets` such as ``atss``, ``tal``, ``atss+minpos``, any call such as
``"ATSSAssigner(topk=13)"``, or ``config`` for the config's own assigner; a named rule replaces the config's
whole, never merging into a call of the same class); or the rows of a spec
file (TOML, or JSON with the same keys), where each row can add its own overrides (the decoupled
heads' ``cls_target="auto"`` learns a rule's ``score_target`` when it has one, else one-hot, so any
rule swaps in without one)::

    seeds = 3                                   # optional; --seeds wins
    cfg_options = ["train.epochs=8"]            # optional, every run; --cfg-options are added after
    [[rows]]
    config = "configs/shapes_atss.py"           # paths relative to the current folder
    assigner = "atss"
    label = "ATSS"                              # optional; default "<assigner>" or "<assigner> @ <config>"
    [[rows]]
    config = "configs/shapes_yolov8_tal.py"
    assigner = "atss"
    label = "ATSS, decoupled"
    cfg_options = ["train.epochs=17"]           # optional: this row's own overrides
    vs = "TAL, decoupled"                       # optional: the row its difference is taken to
    [[rows]]
    config = "configs/shapes_yolo26.py"
    assigner = "tal:tal-e2e-ultralytics"        # a pair: the one-to-many and the one-to-one branch's rule
    branch = "both"                             # optional: one2many (default), one2one or both

Dual-branch heads (YOLOv10, YOLO26: a one-to-one branch read without NMS) train each branch with its own
rule; ``--branch`` (or a row's ``branch``) says which the row's rule is for
(:mod:`detkit.assigners.branches`): ``one2many`` (default; the one-to-one branch keeps the config's
rule), ``one2one`` (refused unless the rule is one-to-one: task-aligned at ``topk=1`` or ``topk2=1``),
``both`` (``RULE`` and its one-to-one form, the same rule at ``topk=1``; or a pair ``O2M:O2O``). The
table's header names each row's rule on each branch, as the runs' configs have them.

Seeds: ``--seeds N`` trains every row with ``train.seed`` = 0 .. N-1; a seed fixes the model's
initialisation and the data order and is the same for every row, so runs are paired. After
training, the tool evaluates the EMA weights on the val split (COCO metrics, per-image AP, the
share of GTs by size without a correct detection at any score) and keeps the run's ``result.json``,
its detections (``val_results.json``) and its error analysis at score 0.3 (``errors.md``, as
``tools/test.py --analysis``); the training-time assignment statistics
(positives per GT, GTs by size without a positive, positives forced by ``MinPositives``) come from
the run's ``metrics.csv`` over all epochs. Writes in the work dir ``ablation.md`` (mean +- std over
seeds; each row's paired difference to the first row, or to its ``vs``, with a 95% interval -- t
over seeds, or with one seed a bootstrap over val images of the per-image AP -- and a verdict
line), ``ablation.csv`` and ``runs.csv``. Each run trains in ``<work dir>/<row>/seed<k>/``.

Parallel seeds: ``--only-seeds 1`` and ``--only-seeds 2`` in two processes on the same work dir
train those seeds only (each run folder is locked by its trainer); the same command without
``--only-seeds`` then reads every finished run back and writes the whole table.

Stopping and resuming: rerun the same command. Finished runs are read back from their
``result.json``; an interrupted run continues from its newest checkpoint (``Trainer(resume="auto")``;
Ctrl-C writes one); a run folder holding another config's run (its ``config.py`` differs in any
argument; formatting and defaults written out do not count) is refused. The table is rewritten
after every run. Training time (wall-clock, and CPU time of the process and its loader workers, which
a shared machine's load does not inflate as much) adds up over sessions (lost for a session killed
with SIGKILL).
By default the trainer's own periodic evaluation is switched off (``train.eval_interval=0``
before the other options: set it in ``--cfg-options`` to watch AP during training).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from detkit.ablation import AblationRow, RunRecord, summarise, training_statistics, write_summary
from detkit.argtypes import nonnegative_int, positive_int
from detkit.assigners.branches import (
    ASSIGNER_KEYS,
    BRANCH_CHOICES,
    branch_rules,
    has_one2one,
    one_to_one_problem,
    split_pair,
)
from detkit.cli import ArgumentParser, run_cli
from detkit.config import ConfigError, instantiate, load_config
from detkit.data.adopt import (
    add_data_arguments,
    apply_data_arguments,
    refuse_replaced_overrides,
    split_dataset_overrides,
)
from detkit.engine.evaluate import evaluate
from detkit.io import atomic_write_text
from detkit.lazy import TARGET_KEY, call_text

SPEC_KEYS = {"seeds", "cfg_options", "rows"}
ROW_KEYS = {"config", "assigner", "label", "cfg_options", "vs", "branch"}
STATE_FILE, RESULT_FILE, RESULTS_FILE = "ablation_run.json", "result.json", "val_results.json"
ERRORS_SCORE_THR = 0.3  # errors.md of each run: tools/test.py --analysis's default


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name).strip("_")[:60]


# ----- rows ----------------------------------------------------------------------------------------


def rows_from_args(configs: Sequence[str], assigners: Sequence[str], branch: str = "one2many") -> list[AblationRow]:
    """Every config with every assigner (for ``branch``); labels name the config only when there are
    several, and the branch when it is not the default one."""
    many = len(configs) > 1
    return [AblationRow(label=row_label(a, branch) + (f" @ {Path(c).stem}" if many else ""), config=c, assigner=a,
                        branch=branch)
            for c in configs for a in assigners]


def row_label(assigner: str, branch: str) -> str:
    """A row's default label: the rule, with the branch when it is not ``one2many`` and the rule is not a pair."""
    return assigner if branch == "one2many" or split_pair(assigner) else f"{assigner} [{branch}]"


def load_spec(path: str) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON spec and check its keys; raises ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--spec {path}: no such file")
    try:
        if p.suffix == ".json":
            spec = json.loads(p.read_text(encoding="utf-8"))
        else:
            try:
                import tomllib
            except ImportError as e:  # Python 3.10
                raise ConfigError(f"--spec {path}: TOML specs need Python 3.11 (tomllib); "
                                  "write the same keys as a .json file") from e
            spec = tomllib.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError / TOMLDecodeError are ValueErrors
        raise ConfigError(f"--spec {path}: cannot read it: {e}") from e
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ConfigError(f"--spec {path}: unknown key(s) {sorted(unknown)}; accepted: {sorted(SPEC_KEYS)}")
    if not spec.get("rows"):
        raise ConfigError(f"--spec {path}: no [[rows]]")
    return spec


def rows_from_spec(spec: dict[str, Any], path: str) -> list[AblationRow]:
    rows = []
    for i, r in enumerate(spec["rows"]):
        unknown = set(r) - ROW_KEYS
        if unknown or "config" not in r or "assigner" not in r:
            raise ConfigError(f"--spec {path}: rows[{i}]: needs config and assigner; unknown key(s) "
                              f"{sorted(unknown)}; accepted: {sorted(ROW_KEYS)}")
        branch = r.get("branch", "one2many")
        if branch not in BRANCH_CHOICES:
            raise ConfigError(f"--spec {path}: rows[{i}]: branch={branch!r}; expected one of "
                              f"{', '.join(BRANCH_CHOICES)}")
        label = r.get("label") or f"{row_label(r['assigner'], branch)} @ {Path(r['config']).stem}"
        rows.append(AblationRow(label=label, config=r["config"], assigner=r["assigner"],
                                cfg_options=tuple(r.get("cfg_options", ())), vs=r.get("vs"), branch=branch))
    return rows


def check_rows(rows: Sequence[AblationRow]) -> None:
    labels = [r.label for r in rows]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"row labels must differ; repeated: {dupes}")
    folders = [slug(x) for x in labels]
    if len(set(folders)) != len(folders):
        raise ConfigError(f"row labels {labels} give the same folder name; change a label")
    for r in rows:
        if r.vs is not None and r.vs not in labels:
            raise ConfigError(f"row {r.label!r}: vs={r.vs!r} is not a row label ({', '.join(labels)})")


def run_config(row: AblationRow, seed: int, common: Sequence[str], data: argparse.Namespace | None = None):
    """The merged config of one run: eval off, the common options, the assigner, the row's options, the seed;
    then ``--data`` / ``--img-size`` from ``data`` (:func:`detkit.data.adopt.apply_data_arguments`)."""
    rules = branch_rules(row.assigner, row.branch)
    if rules.one2one is not None:  # the head must have the branch before an override names it
        check_branches(row, load_config(row.config, split_dataset_overrides([*common, *row.cfg_options])[0]))
    overrides = ["train.eval_interval=0", *common, *rules.overrides(), *row.cfg_options, f"train.seed={seed}"]
    # with --data, the dataset's overrides go to the dataset reading the user's data (after it is swapped in)
    if data is not None and data.data:
        refuse_replaced_overrides(overrides, data.data)
    overrides, dataset = split_dataset_overrides(overrides) if data is not None and data.data else (overrides, [])
    cfg = load_config(row.config, overrides)
    if data is not None:
        apply_data_arguments(cfg, data, quiet=True, overrides=dataset)
    check_branches(row, cfg)
    return cfg


def check_branches(row: AblationRow, cfg) -> None:
    """A row naming the one-to-one branch needs a head that has one, and leaves it one-to-one."""
    head = cfg.model.get("head")
    if not has_one2one(head):
        if row.branch != "one2many":
            raise ConfigError(f"row {row.label!r}: --branch {row.branch}: {row.config}'s head has no one-to-one "
                              "branch (model.head.one2one and one2one_loss)")
        return
    problem = one_to_one_problem(instantiate(head.one2one_loss.assigner, ASSIGNER_KEYS["one2one"]))
    if problem is not None:
        raise ConfigError(f"row {row.label!r}: the one-to-one branch must stay one-to-one: {problem}")


def rules_text(cfg) -> str:
    """The rule of each branch of the run config's head, as the report names them."""
    head = cfg.model.head

    def text(node: Any) -> str:
        return call_text(node) if isinstance(node, Mapping) and TARGET_KEY in node else repr(node)

    if not has_one2one(head):
        return f"assigner `{text(head.loss.assigner)}`"
    return f"one-to-many branch `{text(head.loss.assigner)}`, one-to-one branch `{text(head.one2one_loss.assigner)}`"


# ----- one run -------------------------------------------------------------------------------------


def canonical(node: Any) -> Any:
    """A config as plain data that compares equal when the runs it describes are the same: keys
    sorted, components as dotted class names, arguments equal to the constructor's default left
    out (so ``multi_label=True`` written out equals a config relying on that default)."""
    if isinstance(node, Mapping):
        items = {k: v for k, v in node.items() if k != "_target_"}
        target = node.get("_target_")
        if target is None:
            return {str(k): canonical(v) for k, v in sorted(items.items(), key=lambda kv: str(kv[0]))}
        params: Mapping[str, inspect.Parameter]
        try:
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):
            params = {}
        defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
        kept = {k: canonical(v) for k, v in items.items()
                if k not in defaults or canonical(v) != canonical(defaults[k])}
        return {"_target_": canonical(target), **dict(sorted(kept.items()))}
    if isinstance(node, (list, tuple)):
        return [canonical(v) for v in node]
    if isinstance(node, type) or callable(node):
        return f"{getattr(node, '__module__', '')}.{getattr(node, '__qualname__', repr(node))}"
    return node


def fingerprint(cfg) -> str:
    """Short hash of :func:`canonical` ``(cfg)``."""
    text = json.dumps(canonical(cfg), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_same_run(run_dir: Path, cfg) -> None:
    """Refuse a run folder whose run (its ``config.py``, the merged config the trainer wrote) is not
    the one ``cfg`` describes (:func:`canonical`: formatting and explicit defaults do not count)."""
    done = run_dir / "config.py"
    if done.is_file() and fingerprint(load_config(str(done))) != fingerprint(cfg):
        raise ConfigError(f"{run_dir} holds a run of another config (options changed since it ran); "
                          "use another --work-dir or delete that folder")


def read_state(run_dir: Path) -> dict[str, Any]:
    """The run folder's timing (``{"train_seconds", "train_cpu_seconds"}``: wall-clock and CPU time of
    this process and its loader workers, summed over sessions)."""
    path = run_dir / STATE_FILE
    state = json.loads(path.read_text()) if path.is_file() else {}
    return {"train_seconds": float(state.get("train_seconds", 0.0)),
            "train_cpu_seconds": float(state.get("train_cpu_seconds", 0.0))}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the loader workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def train_run(row: AblationRow, seed: int, cfg, run_dir: Path, progress: bool, train: bool = True) -> RunRecord | None:
    """Train (or resume, or read back) one run and evaluate it; with ``train=False`` only read back
    a finished run (None when there is none)."""
    from detkit.engine.checkpoint import find_latest_checkpoint
    from detkit.engine.trainer import Trainer
    from detkit.engine.workdir import previous_run_files

    check_same_run(run_dir, cfg)
    state = read_state(run_dir)
    if (run_dir / RESULT_FILE).is_file():
        return RunRecord.from_json(json.loads((run_dir / RESULT_FILE).read_text()))
    if not train:
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / STATE_FILE, state)
    resume = "auto" if find_latest_checkpoint(run_dir) else None
    trainer = Trainer(cfg, work_dir=run_dir, progress=progress, resume=resume,
                      overwrite=resume is None and bool(previous_run_files(run_dir)))
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    try:
        trainer.train()
    finally:
        state["train_seconds"] += time.perf_counter() - t0
        state["train_cpu_seconds"] += cpu_seconds() - cpu0
        write_json(run_dir / STATE_FILE, state)
    model = trainer.ema.module if trainer.ema is not None else trainer.detector  # as the trainer evaluates
    run = evaluate(cfg, model, trainer.device, progress=progress)
    metrics, results, evaluator = run.metrics, run.results, run.evaluator
    write_json(run_dir / RESULTS_FILE, results)
    from detkit.evaluation.errors import analyse_errors
    from detkit.evaluation.per_image import per_image_ap

    assert evaluator is not None  # one process: the main one
    gt, names, ids = evaluator.gt.dataset, evaluator.class_names, evaluator.image_ids
    found = analyse_errors(gt, results, score_thr=0.0, class_names=names, image_ids=ids)
    record = RunRecord(label=row.label, seed=seed, metrics={k: float(v) for k, v in metrics.items() if "/" not in k},
                       stats=training_statistics(trainer.writer.epochs), not_found_pct=found.not_found_pct(),
                       per_image_ap=per_image_ap(gt, results, ids), train_min=state["train_seconds"] / 60,
                       train_cpu_min=state["train_cpu_seconds"] / 60 or math.nan)
    errors = analyse_errors(gt, results, score_thr=ERRORS_SCORE_THR, class_names=names, image_ids=ids)
    atomic_write_text(run_dir / "errors.md", errors.to_markdown())
    write_json(run_dir / RESULT_FILE, record.to_json())
    return record


# ----- the ablation --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="*", help="configs (each trained with every --assigners)")
    p.add_argument("--configs", dest="more_configs", nargs="+", default=[], metavar="CONFIG")
    p.add_argument("--assigners", nargs="+", default=None,
                   help="default: atss iou grid; with --branch both also pairs O2M:O2O")
    p.add_argument("--branch", choices=BRANCH_CHOICES, default=None,
                   help="the branch of a dual-branch head the rules train (default one2many)")
    p.add_argument("--spec", default=None, help="TOML/JSON file of rows (instead of configs x assigners)")
    p.add_argument("--seeds", type=positive_int, default=None,
                   help="runs per row, seeds 0..N-1 (default 1, or the spec's)")
    p.add_argument("--only-seeds", type=nonnegative_int, nargs="+", default=None, metavar="SEED",
                   help="train only these seeds' runs now (finished runs of the others are read back): "
                        "one process per seed on a shared work dir, then a last call without it for the table")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    add_data_arguments(p)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> tuple[list[AblationRow], int, list[str], Path]:
    """Rows, seed count, common overrides and work dir from the arguments (and the spec)."""
    configs = [*args.configs, *args.more_configs]
    if args.spec:
        if configs or args.assigners or args.branch:
            raise ConfigError("--spec takes its rows from the file: leave out configs, --assigners and --branch")
        spec = load_spec(args.spec)
        rows, seeds, common = rows_from_spec(spec, args.spec), spec.get("seeds", 1), list(spec.get("cfg_options", []))
        name = Path(args.spec).stem
    else:
        if not configs:
            raise ConfigError("give one or more configs, or --spec FILE")
        rows = rows_from_args(configs, args.assigners or ["atss", "iou", "grid"], args.branch or "one2many")
        seeds, common = 1, []
        name = Path(configs[0]).stem
    seeds = args.seeds if args.seeds is not None else seeds
    if not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be an int >= 1, got {seeds!r}")
    check_rows(rows)
    work_dir = Path(args.work_dir or Path("work_dirs") / "ablation" / name)
    return rows, seeds, [*common, *args.cfg_options], work_dir


def header(rows: Sequence[AblationRow], seeds: int, common: Sequence[str], cfgs: Mapping[str, Any]) -> str:
    """The report's header: the common options, then each row's config and (from its run config
    ``cfgs[label]``) the rule of each branch."""
    lines = [f"Assigner ablation: {len(rows)} rows x {seeds} seed(s) (train.seed 0..{seeds - 1}); "
             f"options for every run: {' '.join(common) or '(none)'}", ""]
    for r in rows:
        extra = f" + {' '.join(r.cfg_options)}" if r.cfg_options else ""
        lines.append(f"- {r.label}: `{r.config}`, {rules_text(cfgs[r.label])}{extra}")
    return "\n".join(lines) + "\n\n"


def run(args: argparse.Namespace) -> None:
    rows, seeds, common, work_dir = plan(args)
    from detkit.engine.output_paths import check_not_input, check_output_dir, config_input_paths

    cfgs = {(r.label, s): run_config(r, s, common, args) for r in rows for s in range(seeds)}  # all checked first
    inputs = [args.spec, *config_input_paths(args.data), *(r.config for r in rows)]
    for cfg in cfgs.values():
        inputs += config_input_paths(cfg.get("data"))
    check_not_input(work_dir, inputs, "--work-dir")  # never inside a data set or over a config
    check_output_dir(work_dir, "--work-dir")
    work_dir.mkdir(parents=True, exist_ok=True)
    records: list[RunRecord] = []
    top = header(rows, seeds, common, {r.label: cfgs[r.label, 0] for r in rows})
    only = set(args.only_seeds) if args.only_seeds else set(range(seeds))
    if not only <= set(range(seeds)):
        raise ConfigError(f"--only-seeds {sorted(only)}: the ablation's seeds are 0..{seeds - 1}")
    for seed in range(seeds):  # seed-major: an interrupted ablation has every row at the same depth
        for row in rows:
            if seed in only:
                print(f"== {row.label}, seed {seed}", flush=True)
            record = train_run(row, seed, cfgs[row.label, seed], work_dir / slug(row.label) / f"seed{seed}",
                               not args.no_progress, train=seed in only)
            if record is not None:
                records.append(record)
                write_summary(summarise(rows, records), records, work_dir, top)
    table = write_summary(summarise(rows, records), records, work_dir, top)
    print(table)
    print(f"table written to {work_dir}/ablation.md, ablation.csv and runs.csv")


def main(argv: Sequence[str] | None = None) -> int:
    from detkit.engine.trainer import TrainingAborted, TrainingDiverged, TrainingInterrupted

    def interrupted(e: TrainingInterrupted | TrainingAborted) -> int:
        print(f"interrupted: {e}\nrerun the same command to resume the ablation", file=sys.stderr)
        return e.exit_code

    def diverged(e: TrainingDiverged) -> int:
        print(f"error: {e}", file=sys.stderr)
        return 1

    return run_cli(lambda: run(parse_args(argv)), handlers={TrainingInterrupted: interrupted,
                                                            TrainingAborted: interrupted, TrainingDiverged: diverged})

if __name__ == "__main__":
    sys.exit(main())
