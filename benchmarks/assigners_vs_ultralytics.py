"""detkit's assigners next to the peers' own, on the same batch: Ultralytics' TaskAlignedAssigner,
YOLOX's SimOTA (``YOLOXHead.get_assignments``) and mmyolo's ``BatchDynamicSoftLabelAssigner``.

    .venv-bench/bin/python benchmarks/assigners_vs_ultralytics.py [--batch 16] [--gts 50] [--rounds 7] [--threads 2]
        [--busy 2]

Setting: a 640x640 input, anchor-free points at strides 8/16/32 (8,400 priors), 80 classes, ``--gts``
GT slots per image (40 to all of them valid, padding rows trailing and all zeros, as the peers'
collate functions make them), GT sides up to 392 px, predictions drawn near the priors (4 strides
wide, jittered by 20 px) with mostly low scores (class logits, plus objectness logits for YOLOX).

Time: every side in one process, all sides once per round, the order rotating (see
``assigners_measure.py``); a ratio is the median of the per-round ratios. Memory: each side's first
call in a fresh process, the growth of its peak resident set. Where detkit's preset is the peer's
rule, the table also counts the priors on which the two disagree (positive or not, GT, soft target
beyond 1e-5). Peers are installed only in ``.venv-bench`` (``make bench-setup``, ``make parity``);
a missing one is reported and its rows left out.

Contention (``--busy N``, issue 29): each round times every side quiet and then with N background processes
spinning (``assigners_measure.busy``); the table gives both phases' medians and ratios (memory is
left to the run without ``--busy``).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers beside this file
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from assigners_measure import alternate, alternate_busy, load_line, peak_of, ratio, run_isolated  # noqa: E402

STRIDES = (8, 16, 32)
NUM_CLASSES = 80


def make_inputs(batch: int, num_gts: int, size: int = 640, num_classes: int = NUM_CLASSES, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    centres, strides = [], []
    for s in STRIDES:
        n = size // s
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        centres.append(torch.stack([xs, ys], -1).reshape(-1, 2).float().add(0.5).mul(s))
        strides.append(torch.full((n * n,), float(s)))
    points, prior_strides = torch.cat(centres), torch.cat(strides)
    half = prior_strides[:, None] * 2.5  # detkit's point priors: squares of side 5 strides
    priors = torch.cat([points - half, points + half], 1)
    wh = torch.rand(batch, num_gts, 2, generator=g) ** 2 * (size * 0.6) + 8
    xy = torch.rand(batch, num_gts, 2, generator=g) * (size - wh)
    gt_boxes = torch.cat([xy, xy + wh], -1)
    gt_labels = torch.randint(0, num_classes, (batch, num_gts), generator=g)
    num_valid = torch.randint(int(num_gts * 0.8), num_gts + 1, (batch,), generator=g)
    gt_mask = torch.arange(num_gts)[None] < num_valid[:, None]  # trailing padding rows of zeros, as the
    gt_boxes = gt_boxes * gt_mask[..., None]  # peers' collate functions make them (mmyolo weighs padding rows)
    jitter = torch.randn(batch, points.shape[0], 4, generator=g) * 20
    pred_wh = prior_strides[None, :, None].expand(batch, -1, 2) * 4
    pred_boxes = torch.cat([points - pred_wh / 2, points + pred_wh / 2], -1) + jitter
    pred_boxes = torch.cat([pred_boxes[..., :2], torch.maximum(pred_boxes[..., 2:], pred_boxes[..., :2] + 1)], -1)
    probs = (torch.rand(batch, points.shape[0], num_classes, generator=g) ** 6).clamp(1e-6, 1 - 1e-6)  # mostly low
    cls_logits = torch.logit(probs)
    obj_logits = torch.randn(batch, points.shape[0], 1, generator=g) * 2
    from detkit.anchors import PointGenerator

    grid = PointGenerator(list(STRIDES), scale=5.0).grid_priors([(size // s,) * 2 for s in STRIDES])
    grid = None if isinstance(grid, tuple) else grid  # a PriorGrid (detkit >= issue 30) goes to assign as is
    assert grid is None or torch.equal(grid.boxes, priors)
    return dict(points=points, priors=priors, prior_strides=prior_strides, grid=grid,
                num_level_priors=[(size // s) ** 2 for s in STRIDES], gt_boxes=gt_boxes, gt_labels=gt_labels,
                gt_mask=gt_mask, pred_boxes=pred_boxes, cls_logits=cls_logits, obj_logits=obj_logits,
                pred_scores=cls_logits.sigmoid(), yolox_scores=cls_logits.sigmoid() * obj_logits.sigmoid())


# ------------------------------------------------------------------------------------------------
# sides: each returns a function of the inputs; detkit's return AssignResult, the peers their own
# ------------------------------------------------------------------------------------------------


def detkit_side(preset: str) -> Callable[[dict], object]:
    from detkit.assigners.presets import build_preset

    assigner = build_preset(preset)
    scores = "yolox_scores" if preset.startswith("simota") else "pred_scores"

    def run(x: dict):
        priors = x["priors"] if x["grid"] is None else x["grid"]
        return assigner.assign(priors, x["gt_boxes"], x["gt_labels"], x["gt_mask"],
                               num_level_priors=x["num_level_priors"], prior_strides=x["prior_strides"],
                               pred_boxes=x["pred_boxes"], pred_scores=x[scores])

    return run


def ultralytics_side(topk: int, alpha: float, with_strides: bool) -> Callable[[dict], object]:
    from ultralytics.utils.tal import TaskAlignedAssigner

    kwargs = dict(stride=list(STRIDES)) if with_strides else {}
    tal = TaskAlignedAssigner(topk=topk, num_classes=NUM_CLASSES, alpha=alpha, beta=6.0, **kwargs)

    def run(x: dict):
        return tal(x["pred_scores"], x["pred_boxes"], x["points"], x["gt_labels"][..., None].float(),
                   x["gt_boxes"], x["gt_mask"][..., None].float())

    return run


def yolox_side() -> Callable[[dict], object]:
    """YOLOX 0.3.0's ``get_assignments``, image by image as its ``get_losses`` calls it
    (``parity_assigners.yolox_assignments``); returns the ``(B, N)`` GT index (-1 not positive) and IoU."""
    from parity_assigners import yolox_assignments, yolox_head

    head = yolox_head(NUM_CLASSES)

    def run(x: dict):
        return yolox_assignments(head, x, x["points"])

    return run


def mmyolo_side() -> Callable[[dict], object]:
    """mmyolo 0.6's ``BatchDynamicSoftLabelAssigner`` on the whole batch (its class logits)."""
    from parity_assigners import _load_mm

    assigner = _load_mm()[1](num_classes=NUM_CLASSES, soft_center_radius=3.0, topk=13, iou_weight=3.0)

    def run(x: dict):
        s = x["prior_strides"][:, None]
        return assigner(x["pred_boxes"], x["cls_logits"], torch.cat([x["points"], s, s], 1), x["gt_labels"][..., None],
                        x["gt_boxes"], x["gt_mask"][..., None].float())

    return run


SIDES: dict[str, Callable[[], Callable[[dict], object]]] = {
    "ultralytics TAL, v8 loss settings (topk 10, alpha 0.5, CIoU)": lambda: ultralytics_side(10, 0.5, True),
    "detkit tal-ultralytics": lambda: detkit_side("tal-ultralytics"),
    "ultralytics TAL (topk 13, alpha 1, CIoU)": lambda: ultralytics_side(13, 1.0, False),
    "detkit tal (topk 13, alpha 1, IoU)": lambda: detkit_side("tal"),
    "yolox SimOTA (get_assignments per image)": yolox_side,
    "detkit simota-yolox": lambda: detkit_side("simota-yolox"),
    "mmyolo BatchDynamicSoftLabelAssigner": mmyolo_side,
    "detkit dsl-mmyolo": lambda: detkit_side("dsl-mmyolo"),
    "detkit atss": lambda: detkit_side("atss"),
    "detkit iou": lambda: detkit_side("iou"),
}
ULTRA = "ultralytics TAL, v8 loss settings (topk 10, alpha 0.5, CIoU)"
# (detkit side, reference side, target ratio or None, whether the two are the same rule)
COMPARISONS = [
    ("detkit tal-ultralytics", ULTRA, 0.8, True),
    ("detkit tal (topk 13, alpha 1, IoU)", "ultralytics TAL (topk 13, alpha 1, CIoU)", 0.8, False),
    ("detkit simota-yolox", "yolox SimOTA (get_assignments per image)", 1.0, True),
    ("detkit simota-yolox", ULTRA, 1.0, False),
    ("detkit dsl-mmyolo", "mmyolo BatchDynamicSoftLabelAssigner", 0.5, True),
    ("detkit atss", ULTRA, None, False),
    ("detkit iou", ULTRA, None, False),
]


def disagreements(name: str, peer: str, x: dict, detkit_out, peer_out) -> str:
    """Disagreements of detkit's preset with the peer on this batch (see ``parity_assigners.compare``)."""
    from parity_assigners import compare

    if peer == ULTRA:
        _, _, target, fg, gt_idx = peer_out
        gt, soft, ours_soft = torch.where(fg.bool(), gt_idx, -1), target.amax(-1), detkit_out.score_target
    elif peer.startswith("yolox"):
        (gt, soft), ours_soft = peer_out, detkit_out.iou
    else:  # mmyolo returns boxes: the GT of a positive is read back from its box
        pos = peer_out["assigned_labels"] != NUM_CLASSES
        same = (peer_out["assigned_bboxes"][:, :, None, :] == x["gt_boxes"][:, None, :, :]).all(-1)  # (B, N, M)
        gt = torch.where(pos, same.float().argmax(-1), -1)
        soft, ours_soft = peer_out["assign_metrics"], detkit_out.score_target
    c = compare(detkit_out, gt, soft, ours_soft)
    return f"{c['pos_diff']} / {c['gt_diff']} / {c['soft_diff']} of {c['peer_pos']}"


def child(name: str, args: argparse.Namespace) -> None:
    """One side's first call in this fresh process: time and peak memory (printed as JSON)."""
    torch.set_num_threads(args.threads)
    x = make_inputs(args.batch, args.gts)
    fn = SIDES[name]()
    with torch.no_grad():
        print(json.dumps(peak_of(lambda: fn(x))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--gts", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--busy", type=int, default=0, help="also time every side with N busy background processes")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one side per process
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return 0
    torch.set_num_threads(args.threads)
    x = make_inputs(args.batch, args.gts)
    fns, missing = {}, []
    for name, build in SIDES.items():
        try:
            side = build()
        except ImportError as e:
            missing.append(f"{name} ({e.name} not installed)")
            continue
        fns[name] = functools.partial(side, x)
    print(f"## Assigners: batch {args.batch}, 8,400 points (640, strides 8/16/32), {args.gts} GT slots per image, "
          f"{NUM_CLASSES} classes, CPU, {args.threads} threads, {args.rounds} rounds")
    versions = []
    for mod in ("ultralytics", "yolox", "mmyolo"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            versions.append(f"{mod} missing")
    print(f"torch {torch.__version__}, {', '.join(versions)}, python {platform.python_version()}; "
          f"{load_line()} before timing")
    with torch.no_grad():
        if args.busy:
            times, loaded, loads = alternate_busy(fns, args.rounds, args.busy)
        else:
            times, loaded, loads = alternate(fns, args.rounds), {}, []
        outs = {name: fn() for name, fn in fns.items()}
    print("\n".join(loads))
    print(f"{load_line()} after timing\n")
    no_memory = {"peak_growth_mib": float("nan")}  # --busy: timing only (memory: the run without it)
    memory = {name: no_memory if args.busy else run_isolated(
        Path(__file__).name, [name, "--batch", str(args.batch), "--gts", str(args.gts), "--threads", str(args.threads)],
        sys.executable) for name in fns}
    print("| detkit | reference | detkit (ms) | reference (ms) | time ratio (target) | peak RSS growth detkit / "
          "reference (MiB) | disagreements: positive / GT / soft of the peer's positives |")
    print("|---|---|---:|---:|---:|---:|---|")
    for ours, ref, target, same_rule in COMPARISONS:
        if ours not in fns or ref not in fns:
            continue
        med = lambda n: sorted(times[n])[len(times[n]) // 2] * 1000  # noqa: E731
        r = ratio(times, ours, ref)
        goal = f" (<= {target})" if target else ""
        diff = disagreements(ours, ref, x, outs[ours], outs[ref]) if same_rule else "other rule"
        print(f"| {ours} | {ref} | {med(ours):.0f} | {med(ref):.0f} | **{r:.2f}x**{goal} | "
              f"{memory[ours]['peak_growth_mib']:.0f} / {memory[ref]['peak_growth_mib']:.0f} | {diff} |")
    if loaded:
        print(f"\nUnder load ({args.busy} busy processes), same rounds:\n")
        print("| detkit | reference | quiet: detkit / reference (ms) | busy: detkit / reference (ms) | "
              "busy ratio (target) | busy / quiet, detkit and reference |")
        print("|---|---|---:|---:|---:|---:|")
        for ours, ref, target, _ in COMPARISONS:
            if ours not in fns or ref not in fns:
                continue
            q = {n: sorted(times[n])[len(times[n]) // 2] * 1000 for n in (ours, ref)}
            b = {n: sorted(loaded[n])[len(loaded[n]) // 2] * 1000 for n in (ours, ref)}
            goal = f" (<= {target})" if target else ""
            print(f"| {ours} | {ref} | {q[ours]:.0f} / {q[ref]:.0f} | {b[ours]:.0f} / {b[ref]:.0f} | "
                  f"**{ratio(loaded, ours, ref):.2f}x**{goal} | {b[ours] / q[ours]:.2f}x / {b[ref] / q[ref]:.2f}x |")
    for line in missing:
        print(f"\nnot measured: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
