"""detkit's assigners next to Ultralytics' TaskAlignedAssigner, same batch, priors and GT count.

    .venv-bench/bin/python benchmarks/assigners_vs_ultralytics.py [--batch 16] [--gts 50] [--repeat 5]

Also prints how many positives detkit's ``tal-ultralytics`` preset and Ultralytics' assigner as its
YOLOv8 loss builds it (topk 10, alpha 0.5) disagree on for this batch (``parity_assigners.py`` checks
every peer on many batches).

Setting: a 640x640 input, anchor-free points at strides 8/16/32 (8,400 priors), 80 classes, ``--gts``
ground-truth boxes per image, predictions drawn near the GTs with mostly low scores. Each side runs in
a fresh forked process (so peak-RSS growth is its own), best of ``--repeat`` timed calls after one
warm-up. Ultralytics is installed only in the benchmark venv (`make bench-setup`); without it the
detkit rows are printed alone.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import sys
import time
from collections.abc import Callable

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))  # parity_assigners beside this file

STRIDES = (8, 16, 32)


def make_inputs(batch: int, num_gts: int, size: int = 640, num_classes: int = 80, seed: int = 0) -> dict:
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
    gt_mask = torch.ones(batch, num_gts, dtype=torch.bool)
    gt_mask[:, int(num_gts * 0.8):] = torch.rand(batch, num_gts - int(num_gts * 0.8), generator=g) > 0.5  # padding
    jitter = torch.randn(batch, points.shape[0], 4, generator=g) * 20
    pred_wh = prior_strides[None, :, None].expand(batch, -1, 2) * 4
    pred_boxes = torch.cat([points - pred_wh / 2, points + pred_wh / 2], -1) + jitter
    pred_boxes = torch.cat([pred_boxes[..., :2], torch.maximum(pred_boxes[..., 2:], pred_boxes[..., :2] + 1)], -1)
    pred_scores = torch.rand(batch, points.shape[0], num_classes, generator=g) ** 6  # mostly low
    return dict(points=points, priors=priors, prior_strides=prior_strides,
                num_level_priors=[(size // s) ** 2 for s in STRIDES], gt_boxes=gt_boxes, gt_labels=gt_labels,
                gt_mask=gt_mask, pred_boxes=pred_boxes, pred_scores=pred_scores, num_classes=num_classes)


def detkit_call(assigner_name: str) -> Callable[[dict], object]:
    import detkit.assigners as A

    assigner = {
        "ATSSAssigner": lambda: A.ATSSAssigner(topk=9),
        "MaxIoUAssigner": lambda: A.MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4),
        "TaskAlignedAssigner": lambda: A.TaskAlignedAssigner(topk=13, alpha=1.0, beta=6.0),
        "SimOTAAssigner": lambda: A.SimOTAAssigner(),
    }[assigner_name]()

    def run(x: dict):
        return assigner.assign(x["priors"], x["gt_boxes"], x["gt_labels"], x["gt_mask"],
                               num_level_priors=x["num_level_priors"], prior_strides=x["prior_strides"],
                               pred_boxes=x["pred_boxes"], pred_scores=x["pred_scores"])

    return run


def ultralytics_call() -> Callable[[dict], object]:
    from ultralytics.utils.tal import TaskAlignedAssigner

    tal = TaskAlignedAssigner(topk=13, num_classes=80, alpha=1.0, beta=6.0)

    def run(x: dict):
        return tal(x["pred_scores"], x["pred_boxes"], x["points"], x["gt_labels"][..., None].float(),
                   x["gt_boxes"], x["gt_mask"][..., None].float())

    return run


def tal_v8_disagreements(x: dict) -> str:
    """Disagreements of the ``tal-ultralytics`` preset with Ultralytics' v8 assigner on batch ``x``."""
    from parity_assigners import compare, ultralytics_tal_v8

    from detkit.assigners.presets import build_preset

    res = build_preset("tal-ultralytics").assign(
        x["priors"], x["gt_boxes"], x["gt_labels"], x["gt_mask"], pred_boxes=x["pred_boxes"],
        pred_scores=x["pred_scores"])
    gt, soft = ultralytics_tal_v8(x["pred_scores"], x["pred_boxes"], x["points"], x["gt_labels"], x["gt_boxes"],
                                  list(STRIDES), gt_mask=x["gt_mask"])  # padding rows here hold boxes
    c = compare(res, gt, soft, res.score_target)
    return (f"tal-ultralytics vs Ultralytics' v8 assigner on this batch: {c['peer_pos']} / {c['detkit_pos']} "
            f"positives, {c['pos_diff']} positive, {c['gt_diff']} GT and {c['soft_diff']} soft-target disagreements")


def _child(side: str, name: str, args: argparse.Namespace, queue: mp.Queue) -> None:
    torch.set_num_threads(args.threads)
    x = make_inputs(args.batch, args.gts)
    fn = ultralytics_call() if side == "ultralytics" else detkit_call(name)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        fn(x)  # warm-up
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - t0)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # KiB -> MiB
    queue.put((best, peak))


def measure(side: str, name: str, args: argparse.Namespace) -> tuple[float, float]:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(side, name, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--gts", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    rows = []
    try:
        import ultralytics

        rows.append(("ultralytics TaskAlignedAssigner", *measure("ultralytics", "", args)))
        uver = ultralytics.__version__
    except ImportError:
        uver = None
        print("ultralytics is not installed here (run `make bench-setup`, use .venv-bench): detkit alone")
    for name in ("TaskAlignedAssigner", "ATSSAssigner", "SimOTAAssigner", "MaxIoUAssigner"):
        rows.append((f"detkit {name}", *measure("detkit", name, args)))
    print(f"\n## Assigners: batch {args.batch}, 8,400 points (640, strides 8/16/32), {args.gts} GT slots "
          f"per image, 80 classes, CPU, {args.threads} threads, best of {args.repeat}")
    print(f"torch {torch.__version__}, ultralytics {uver}, python {platform.python_version()}\n")
    if uver:
        print(tal_v8_disagreements(make_inputs(args.batch, args.gts)) + "\n")
    ref = rows[0][1] if uver else None
    print("| assigner | time (ms) | time vs Ultralytics TAL | peak RSS growth (MiB) |")
    print("|---|---|---|---|")
    for name, t, mem in rows:
        ratio = f"{t / ref:.2f}x" if ref else "n/a"
        print(f"| {name} | {t * 1000:.1f} | {ratio} | {mem:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
