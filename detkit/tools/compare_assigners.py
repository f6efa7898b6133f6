"""Compare label assigners on a dataset's ground truth with a model's priors — no training needed.

    python tools/compare_assigners.py configs/shapes_atss.py --assigners atss iou grid --images 200

For each assigner: positives per GT (mean / median / min), GTs with no positive (count and %, by
object size small/medium/large in original-image pixels and by pyramid level), mean IoU of the
positives, positives per level. Writes ``assigners.md`` and ``assigners.csv``, one PNG per sample
image with the GT boxes and the priors each assigner made positive side by side, and a histogram of
positives per GT (``--out``, default ``work_dirs/compare_assigners/<config name>``).

``--assigners`` takes short names (``atss``, ``iou``, ``grid``, ``simota``, ``tal``, ``config`` =
the config's own assigner) or any call, e.g. ``"MaxIoUAssigner(pos_iou_thr=0.6, neg_iou_thr=0.5)"``.
Prediction-aware assigners (SimOTA, task-aligned) use the model's predictions: pass
``--checkpoint`` for trained weights; without it they see an untrained model's predictions.

A head with a one-to-one branch (YOLOv10, YOLO26) has a rule per branch; ``--branch`` says which the
named rules stand for (:mod:`detkit.assigners.branches`): ``one2many`` (default), ``one2one`` (a rule
that is not one-to-one is refused), or ``both`` (``RULE`` on the one-to-many branch and its one-to-one
form at ``topk=1`` on the other, or a pair ``O2M:O2O``). Each rule sees its own branch's predictions,
and on such a head the rows are labelled ``<rule> [<branch>]``::

    python tools/compare_assigners.py configs/shapes_yolo26.py --branch both \\
        --assigners config tal-ultralytics:tal-e2e-ultralytics
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from detkit.analysis import SIZE_NAMES, AssignmentStats
from detkit.argtypes import nonnegative_int, positive_int
from detkit.assigners import Assigner
from detkit.assigners.branches import ASSIGNER_KEYS, BRANCH_CHOICES, branch_rules, has_one2one, one_to_one_problem
from detkit.assigners.presets import ASSIGNER_PRESETS, assigner_call
from detkit.cli import ArgumentParser, run_cli
from detkit.config import ConfigDict, ConfigError, instantiate, parse_value
from detkit.data.adopt import add_data_arguments, load_data_config
from detkit.engine.output_paths import check_not_input, check_output_dir, config_input_paths
from detkit.viz import draw_assignment, tensor_to_bgr


def build_assigners(names: Sequence[str], cfg: ConfigDict, branch: str = "one2many",
                    config: str = "the config") -> dict[str, tuple[str, Assigner]]:
    """Short names, call expressions or pairs -> ``{label: (branch, assigner)}`` for ``--branch branch``
    (:func:`detkit.assigners.branches.branch_rules`); labels carry the branch on a dual-branch head."""
    dual = has_one2one(cfg.model.get("head"))
    if branch != "one2many" and not dual:
        raise ConfigError(f"--branch {branch}: {config}'s head has no one-to-one branch "
                          "(model.head.one2one and one2one_loss)")
    out: dict[str, tuple[str, Assigner]] = {}
    for entry in names:
        for part, name in branch_rules(entry, branch).items():
            key = ASSIGNER_KEYS[part]
            if name == "config":
                node = cfg.model.head.loss.assigner if part == "one2many" else cfg.model.head.one2one_loss.assigner
                label = type_name(node)
                assigner = instantiate(node, key)
            else:
                node = parse_value(assigner_call(name))
                if not isinstance(node, dict):
                    raise ConfigError(f"--assigners: {name!r} is neither a short name "
                                      f"({', '.join(ASSIGNER_PRESETS)}) nor a call")
                label, assigner = name, instantiate(node, f"--assigners {name}")
            problem = one_to_one_problem(assigner) if part == "one2one" else None
            if problem is not None:
                raise ConfigError(f"--assigners {name}: the one-to-one branch must stay one-to-one: {problem}")
            out[f"{label} [{part}]" if dual else label] = (part, assigner)
    return out


def type_name(node) -> str:
    return node["_target_"].__name__ if isinstance(node, dict) else type(node).__name__


def predictions(model, images, branch: str = "one2many"):
    """Decoded boxes ``(B, N, 4)`` and scores ``(B, N, C)`` (class probabilities, times objectness
    for heads that have it) of the model's ``branch``, as the loss pipeline hands them to an assigner."""
    with torch.no_grad():
        preds = model.head.flatten(model(images), branch)
    return preds.decode(), preds.scores()


def write_tables(rows: dict[str, dict[str, float]], num_levels: int, out: Path) -> str:
    keys = list(next(iter(rows.values())).keys())
    with open(out / "assigners.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["assigner", *keys])
        for name, s in rows.items():
            writer.writerow([name, *[f"{s[k]:.4f}" for k in keys]])
    lines = [
        "| assigner | pos/GT mean | median | min | GTs w/o pos | % | "
        + " | ".join(f"w/o pos {n} (%)" for n in SIZE_NAMES)
        + " | " + " | ".join(f"w/o pos L{i}" for i in range(num_levels))
        + " | IoU of pos | " + " | ".join(f"pos L{i} (%)" for i in range(num_levels)) + " |",
        "|" + "---|" * (7 + len(SIZE_NAMES) + 2 * num_levels),
    ]
    for name, s in rows.items():
        cells = [
            name, f"{s['pos_per_gt_mean']:.2f}", f"{s['pos_per_gt_median']:.0f}", f"{s['pos_per_gt_min']:.0f}",
            f"{s['gt_no_pos']:.0f} / {s['num_gt']:.0f}", f"{s['gt_no_pos_pct']:.1f}",
            *[f"{s[f'gt_no_pos_{n}']:.0f} ({s[f'gt_no_pos_{n}_pct']:.1f})" for n in SIZE_NAMES],
            *[f"{s[f'gt_no_pos_level{i}']:.0f}" for i in range(num_levels)],
            f"{s['pos_iou_mean']:.3f}",
            *[f"{s[f'pos_level{i}']:.0f} ({s[f'pos_level{i}_pct']:.0f})" for i in range(num_levels)],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (out / "assigners.md").write_text(table)
    return table


def plot_histogram(stats: dict[str, AssignmentStats], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    top = max(int(s.all_counts().max(initial=0)) for s in stats.values())
    bins = [i - 0.5 for i in range(top + 2)]  # one bin per count
    for name, s in stats.items():
        ax.hist(s.all_counts(), bins=bins, histtype="step", linewidth=2, label=name)
    ax.set_xlabel("positive priors per GT")
    ax.set_ylabel("GTs")
    ax.set_title("Positives per GT")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--assigners", nargs="+", default=["atss", "iou", "grid"],
                        help="presets, calls, 'config', or with --branch both pairs O2M:O2O")
    parser.add_argument("--branch", choices=BRANCH_CHOICES, default="one2many",
                        help="the branch of a dual-branch head the rules are for (default one2many)")
    parser.add_argument("--images", type=positive_int, default=200,
                        help="how many images (from the start of the split)")
    parser.add_argument("--split", default="val", choices=["train", "val"])
    parser.add_argument("--batch", type=positive_int, default=8)
    parser.add_argument("--samples", type=nonnegative_int, default=4, help="images drawn side by side")
    parser.add_argument("--checkpoint", default=None, help="weights for prediction-aware assigners")
    parser.add_argument("--out", default=None)
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    add_data_arguments(parser)
    return run_cli(lambda: run(parser.parse_args(argv)))


def run(args: argparse.Namespace) -> None:
    cfg = load_data_config(args.config, args.cfg_options, args)
    assigners = build_assigners(args.assigners, cfg, args.branch, args.config)
    if args.split not in (cfg.get("data") or {}):
        raise ConfigError(f"{args.config}: no data.{args.split} to compare on")
    out = args.out or Path("work_dirs") / "compare_assigners" / Path(args.config).stem
    check_not_input(out, [args.config, args.checkpoint, *config_input_paths(args.data),
                          *config_input_paths(cfg.data[args.split])], "--out")
    out = check_output_dir(out, "--out")
    out.mkdir(parents=True, exist_ok=True)

    from detkit.data import build_dataloader

    dataset = instantiate(cfg.data[args.split].dataset, f"data.{args.split}.dataset")
    n = min(args.images, len(dataset))
    loader = build_dataloader(torch.utils.data.Subset(dataset, range(n)), args.batch, num_workers=0, shuffle=False)
    model = instantiate(cfg.model, "model").eval()
    if args.checkpoint:
        from detkit.engine.weights import load_weights

        load_weights(model, args.checkpoint)
    head = model.head
    num_levels = len(head.prior_generator.strides)
    stats = {name: AssignmentStats(num_levels=num_levels) for name in assigners}
    drawn = 0
    for batch in loader:
        images = batch["images"]
        sizes = [(images.shape[2] // s, images.shape[3] // s) for s in head.prior_generator.strides]
        grid = head.prior_generator.grid_priors(sizes, images.device)
        priors, prior_strides, num_level_priors = grid.boxes, grid.strides, grid.num_level_priors
        preds = {}  # branch -> (decoded boxes, scores), computed once per batch
        sf = batch["scale_factors"].float()
        area_scale = 1.0 / (sf[:, 0] * sf[:, 1])
        panels: list[list[np.ndarray]] = [[] for _ in range(min(args.samples - drawn, len(images)))]
        for name, (branch, assigner) in assigners.items():
            pred_boxes = pred_scores = None
            if getattr(assigner, "uses_predictions", True):
                if branch not in preds:
                    preds[branch] = predictions(model, images, branch)
                pred_boxes, pred_scores = preds[branch]
            res = assigner.assign(grid, batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"],
                                  num_level_priors=num_level_priors, prior_strides=prior_strides,
                                  pred_boxes=pred_boxes, pred_scores=pred_scores)
            stats[name].update(res.gt_index, res.pos_mask, res.iou, batch["gt_boxes"], batch["gt_mask"],
                               priors, num_level_priors, area_scale=area_scale)
            for i in range(len(panels)):
                panels[i].append(draw_assignment(tensor_to_bgr(images[i]), batch["gt_boxes"][i], batch["gt_mask"][i],
                                                 priors, res.gt_index[i], res.pos_mask[i], name))
        for i, row in enumerate(panels):
            image_id = int(batch["image_ids"][i])
            cv2.imwrite(str(out / f"assign_{image_id}.png"), np.concatenate(row, axis=1))
        drawn += len(panels)

    rows = {name: s.summary() for name, s in stats.items()}
    table = write_tables(rows, num_levels, out)
    plot_histogram(stats, out / "positives_per_gt.png")
    print(f"{n} images, {int(next(iter(rows.values()))['num_gt'])} GTs, config {args.config}\n")
    print(table)
    print(f"tables, pictures and histogram written to {out}/")


if __name__ == "__main__":
    sys.exit(main())
