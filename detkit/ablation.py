"""The summary of an assigner ablation: one record per training run, one table per ablation.

``tools/ablate_assigners.py`` trains every row (a config and an assigner) once per seed and keeps a
:class:`RunRecord` of each run; :func:`summarise` turns them into

* the mean +- standard deviation over seeds of each COCO metric, with the training-time assignment
  statistics (positives per GT, the share of GTs by size that had no positive, priors forced by
  ``MinPositives``) next to the share of val GTs by size the trained model does not find (no
  correct detection at IoU 0.5 at any score);
* for each row, the paired difference to its reference row (the first row unless a row names
  another) with a 95% interval: Student's t over the seeds both rows ran (same seed = same
  initialisation and data order), or with a single seed a bootstrap over the validation images of
  the per-image AP difference (:mod:`detkit.evaluation.significance`), and a verdict line.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from detkit.analysis import SIZE_NAMES
from detkit.evaluation.per_image import paired_image_differences
from detkit.evaluation.significance import Interval, bootstrap_interval, paired_t_interval, verdict
from detkit.io import atomic_write, atomic_write_text

__all__ = ["METRICS", "AblationRow", "RowSummary", "RunRecord", "summarise", "to_markdown", "training_statistics",
           "write_summary"]

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
DIFF_METRICS = ("AP", "AP50", "APs")  # the differences shown in the markdown table (all go to the CSV)


@dataclass(frozen=True)
class AblationRow:
    """One row of the table: ``label`` trains ``config`` with ``assigner`` (a preset, a call, or
    ``"config"`` for the config's own; with ``branch="both"`` also a pair ``O2M:O2O``) plus
    ``cfg_options``; ``vs`` is the label of the row its difference is taken to (None: the first row);
    ``branch`` the branch of a dual-branch head the rule trains (:mod:`detkit.assigners.branches`)."""

    label: str
    config: str
    assigner: str
    cfg_options: tuple[str, ...] = ()
    vs: str | None = None
    branch: str = "one2many"


@dataclass
class RunRecord:
    """What one training run left (``result.json`` in its folder).

    Attributes:
        label, seed: the row and the seed.
        metrics: COCO metrics of the final (EMA) weights on the val split (``AP`` ... ``APl``).
        stats: training-time assignment statistics (:func:`training_statistics`).
        not_found_pct: ``{size: % of the val GTs of that size without a correct detection at any
            score}`` (:meth:`detkit.evaluation.errors.ErrorReport.not_found_pct`).
        per_image_ap: ``{image_id: COCO AP of that image}`` (for the one-seed bootstrap).
        train_min: wall-clock training minutes (all sessions of a resumed run).
        train_cpu_min: CPU minutes of the training process and its loader workers (NaN: not measured).
    """

    label: str
    seed: int
    metrics: dict[str, float]
    stats: dict[str, float]
    not_found_pct: dict[str, float]
    per_image_ap: dict[int, float] = field(default_factory=dict)
    train_min: float = 0.0
    train_cpu_min: float = math.nan

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["per_image_ap"] = {str(k): v for k, v in self.per_image_ap.items()}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        values = dict(data)
        values["per_image_ap"] = {int(k): float(v) for k, v in (values.get("per_image_ap") or {}).items()}
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})


def training_statistics(epochs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Assignment statistics over a whole training run, from the per-epoch rows of ``metrics.csv``
    (epoch means of the loss pipeline's ``stat_*``; epochs have equal iteration counts, so a ratio
    of their sums is the ratio over all iterations).

    Returns:
        ``pos_per_gt`` (mean over epochs), ``gt_no_pos_pct`` (% of GTs without a positive),
        ``gt_no_pos_<size>_pct`` per COCO size (network-input pixels), ``forced_pct`` (priors forced
        by MinPositives per 100 GTs; NaN when the assigner forces none) -- NaN where a key is absent.
    """

    def total(key: str) -> float:
        values = [float(r[key]) for r in epochs if r.get(key) not in (None, "")]
        return float(np.sum(values)) if values else math.nan

    def pct(num: str, den: str) -> float:
        n, d = total(num), total(den)
        return 100.0 * n / d if d and not math.isnan(n) and not math.isnan(d) else math.nan

    pos = [float(r["stat_pos_per_gt"]) for r in epochs if r.get("stat_pos_per_gt") not in (None, "")]
    out = {"pos_per_gt": float(np.mean(pos)) if pos else math.nan,
           "gt_no_pos_pct": pct("stat_gt_no_pos", "stat_num_gt"),
           "forced_pct": pct("stat_forced_pos", "stat_num_gt")}
    for size in SIZE_NAMES:
        out[f"gt_no_pos_{size}_pct"] = pct(f"stat_gt_no_pos_{size}", f"stat_num_gt_{size}")
    return out


@dataclass
class RowSummary:
    """One row of the summary: means and deviations over seeds, and the difference to ``vs``."""

    row: AblationRow
    seeds: list[int]
    mean: dict[str, float]
    std: dict[str, float]
    vs: str | None = None
    differences: dict[str, Interval] = field(default_factory=dict)
    verdict: str = ""


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan


def _row_values(rec: RunRecord) -> dict[str, float]:
    values = {k: float(rec.metrics.get(k, math.nan)) for k in METRICS}
    values.update({k: float(v) for k, v in rec.stats.items()})
    values.update({f"not_found_{k}_pct": float(v) for k, v in rec.not_found_pct.items()})
    values["train_min"] = rec.train_min
    values["train_cpu_min"] = rec.train_cpu_min
    return values


def _difference(row: list[RunRecord], ref: list[RunRecord], metric: str) -> Interval | None:
    """Paired difference ``row - ref`` of ``metric`` over their common seeds (bootstrap over images
    for AP with one common seed)."""
    by_seed = {r.seed: r for r in ref}
    pairs = [(r, by_seed[r.seed]) for r in row if r.seed in by_seed]
    if not pairs:
        return None
    if len(pairs) == 1 and metric == "AP" and pairs[0][0].per_image_ap and pairs[0][1].per_image_ap:
        d = paired_image_differences(pairs[0][1].per_image_ap, pairs[0][0].per_image_ap)
        return bootstrap_interval(d)
    return paired_t_interval([a.metrics[metric] - b.metrics[metric] for a, b in pairs])


def summarise(rows: Sequence[AblationRow], records: Sequence[RunRecord]) -> list[RowSummary]:
    """Mean +- std per row over its seeds, and each row's paired difference to its reference row
    (``row.vs``, default the first row; the first row itself has none)."""
    by_label = {r.label: [rec for rec in records if rec.label == r.label] for r in rows}
    first = rows[0].label if rows else None
    out = []
    for row in rows:
        recs = sorted(by_label[row.label], key=lambda r: r.seed)
        values = [_row_values(r) for r in recs]
        keys = sorted({k for v in values for k in v})
        stats = {k: _mean_std([v.get(k, math.nan) for v in values]) for k in keys}
        summary = RowSummary(row=row, seeds=[r.seed for r in recs], mean={k: m for k, (m, _) in stats.items()},
                             std={k: s for k, (_, s) in stats.items()})
        ref = row.vs or first
        if ref is not None and ref != row.label and recs:
            summary.vs = ref
            for metric in METRICS:
                iv = _difference(recs, by_label[ref], metric)
                if iv is not None:
                    summary.differences[metric] = iv
            if "AP" in summary.differences:
                summary.verdict = verdict(row.label, ref, summary.differences["AP"])
        out.append(summary)
    return out


def _pm(mean: float, std: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _sizes(mean: Mapping[str, float], fmt: str) -> str:
    vals = [mean.get(fmt.format(s), math.nan) for s in SIZE_NAMES]
    return " / ".join("-" if math.isnan(v) else f"{v:.1f}" for v in vals)


def _interval(iv: Interval | None) -> str:
    if iv is None:
        return "-"
    if math.isnan(iv.low):
        return f"{iv.mean:+.3f}"
    star = " *" if iv.significant else ""
    return f"{iv.mean:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}]{star}"


def to_markdown(summaries: Sequence[RowSummary]) -> str:
    """The two tables (metrics with assignment statistics; differences) and the verdict lines."""
    lines = ["| row | seeds | AP | AP50 | AP75 | APs | APm | APl | positives / GT | "
             "GTs w/o positive in training, % (S / M / L) | forced pos. / 100 GTs | "
             "val GTs not found, % (S / M / L) | training (min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        m = s.mean
        forced = m.get("forced_pct", math.nan)
        lines.append(
            f"| {s.row.label} | {len(s.seeds)} | " + " | ".join(_pm(m.get(k, math.nan), s.std.get(k, math.nan))
                                                         for k in METRICS)
            + f" | {m.get('pos_per_gt', math.nan):.2f} | {_sizes(m, 'gt_no_pos_{}_pct')} | "
            + ("-" if math.isnan(forced) else f"{forced:.1f}")
            + f" | {_sizes(m, 'not_found_{}_pct')} | {m.get('train_min', math.nan):.1f} |")
    diffs = [s for s in summaries if s.vs]
    if diffs:
        lines += ["", "| row | vs | " + " | ".join(f"Δ{k} [95% CI]" for k in DIFF_METRICS) + " | interval over |",
                  "|---|---|" + "---|" * len(DIFF_METRICS) + "---|"]
        for s in diffs:
            over = s.differences["AP"].method + f", n={s.differences['AP'].n}" if "AP" in s.differences else "-"
            lines.append(f"| {s.row.label} | {s.vs} | "
                         + " | ".join(_interval(s.differences.get(k)) for k in DIFF_METRICS) + f" | {over} |")
        lines += ["", "`*`: the 95% interval excludes 0.", ""]
        lines += [f"- {s.verdict}" for s in diffs if s.verdict]
    return "\n".join(lines) + "\n"


def write_summary(summaries: Sequence[RowSummary], records: Sequence[RunRecord], out_dir: str | os.PathLike,
                  header: str = "") -> str:
    """Write ``ablation.md`` (``header`` + :func:`to_markdown`), ``ablation.csv`` (one line per row:
    mean and std of every value, every metric's difference with its interval) and ``runs.csv``
    (one line per run), each atomically (:mod:`detkit.io`); returns the markdown."""
    out = Path(out_dir)
    table = header + to_markdown(summaries)
    atomic_write_text(out / "ablation.md", table)
    keys = sorted({k for s in summaries for k in s.mean})

    def summary_rows(f: IO[str]) -> None:
        w = csv.writer(f)
        w.writerow(["row", "config", "assigner", "seeds", *[f"{k}_{p}" for k in keys for p in ("mean", "std")], "vs",
                    *[f"d{m}_{p}" for m in METRICS for p in ("mean", "low", "high", "significant")],
                    "interval_over"])
        for s in summaries:
            cells = [s.row.label, s.row.config, s.row.assigner, " ".join(map(str, s.seeds))]
            cells += [f"{v:.6g}" for k in keys for v in (s.mean.get(k, math.nan), s.std.get(k, math.nan))]
            cells.append(s.vs or "")
            for m in METRICS:
                iv = s.differences.get(m)
                cells += ["", "", "", ""] if iv is None else \
                    [f"{iv.mean:.6g}", f"{iv.low:.6g}", f"{iv.high:.6g}", str(iv.significant)]
            cells.append(s.differences["AP"].method if "AP" in s.differences else "")
            w.writerow(cells)

    def run_rows(f: IO[str]) -> None:
        run_keys = sorted({k for r in records for k in _row_values(r)})
        w = csv.writer(f)
        w.writerow(["row", "seed", *run_keys])
        for r in records:
            values = _row_values(r)
            w.writerow([r.label, r.seed, *[f"{values.get(k, math.nan):.6g}" for k in run_keys]])

    atomic_write(out / "ablation.csv", "w", summary_rows, newline="", encoding="utf-8")
    atomic_write(out / "runs.csv", "w", run_rows, newline="", encoding="utf-8")
    return table
