"""Time and peak memory of every assigner on a YOLOv4-sized batch, each rule's candidate-sparse form
(``assign``) next to its dense form (``assign_dense``), and ATSS against a per-image loop.

    .venv/bin/python benchmarks/assigners.py [--batch 16] [--size 640] [--gts 50] [--repeat 2] [--threads N]

Priors: YOLOv4's 9 COCO anchors, 3 per location on strides 8/16/32 (25,200 priors at 640).
GTs: random boxes (4..256 px sides), ``--gts`` per image (the last 20% padding in half the
images). Predictions (for SimOTA / task-aligned): the anchor boxes jittered, random scores.

Each assigner runs in its own subprocess so its peak resident memory is its own: the table shows
the median wall time of ``--repeat`` runs (after one warm-up) and the growth of the peak RSS over
the RSS before the first run. The reference is a straightforward per-image loop of the ATSS rule
(full N x M IoU and distance matrices per image, as most implementations do); the benchmark checks
that it gives the same assignment as ``ATSSAssigner`` and prints the speed ratio, measured with the
two alternating in one process (a shared machine's speed drifts between processes).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers beside this file

from assigners_measure import load_line, reset_peak, status_mib  # noqa: E402

from detkit.anchors import YOLOV4_COCO_ANCHORS, YOLOAnchorGenerator  # noqa: E402
from detkit.assigners import (  # noqa: E402
    ATSSAssigner,
    DynamicSoftLabelAssigner,
    FCOSAssigner,
    GridAssigner,
    MaxIoUAssigner,
    SimOTAAssigner,
    TaskAlignedAssigner,
    YOLOv5Assigner,
)
from detkit.boxes import box_iou  # noqa: E402

STRIDES = (8, 16, 32)
NUM_CLASSES = 80
ASSIGNERS = {
    "GridAssigner (YOLOv4)": lambda: GridAssigner(extra_match_thr=0.213, ignore_iou_thr=0.7),
    "YOLOv5Assigner": lambda: YOLOv5Assigner(),
    "MaxIoUAssigner(0.5, 0.4)": lambda: MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4),
    "MaxIoUAssigner(0.5, 0.4), dense form": lambda: DenseForm(MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)),
    "ATSSAssigner(topk=9)": lambda: ATSSAssigner(topk=9),
    "ATSSAssigner(topk=9), dense form": lambda: DenseForm(ATSSAssigner(topk=9)),
    "ATSS per-image loop (reference)": lambda: ReferenceATSS(topk=9),
    "FCOSAssigner": lambda: FCOSAssigner(),
    "FCOSAssigner, dense form": lambda: DenseForm(FCOSAssigner()),
    "SimOTAAssigner": lambda: SimOTAAssigner(),
    "SimOTAAssigner, dense form": lambda: DenseForm(SimOTAAssigner()),
    "TaskAlignedAssigner(topk=13)": lambda: TaskAlignedAssigner(topk=13),
    "TaskAlignedAssigner(topk=13), dense form": lambda: DenseForm(TaskAlignedAssigner(topk=13)),
    "DynamicSoftLabelAssigner": lambda: DynamicSoftLabelAssigner(),
    "DynamicSoftLabelAssigner, dense form": lambda: DenseForm(DynamicSoftLabelAssigner()),
}


class DenseForm:
    """An assigner's dense form (every prior against every GT), the reference its ``assign`` equals."""

    def __init__(self, assigner) -> None:
        self.assigner = assigner

    def assign(self, priors, *args, **kwargs):
        if not isinstance(priors, torch.Tensor):  # a PriorGrid: every prior against every GT on its boxes
            priors = priors.boxes
        return getattr(self.assigner, "assign_dense", self.assigner.assign)(priors, *args, **kwargs)


class ReferenceATSS:
    """The ATSS rule the straightforward way: a Python loop over images, full matrices per image."""

    def __init__(self, topk: int = 9) -> None:
        self.topk = topk

    def assign(self, priors, gt_boxes, gt_labels, gt_mask, *, num_level_priors=None, **_):
        priors = priors if isinstance(priors, torch.Tensor) else priors.boxes
        out = torch.full(gt_mask.shape[:1] + priors.shape[:1], -1, dtype=torch.long)
        pc = (priors[:, :2] + priors[:, 2:]) / 2  # (N, 2)
        for b in range(gt_boxes.shape[0]):
            keep = gt_mask[b].nonzero().flatten()
            gts = gt_boxes[b, keep]  # (G, 4)
            if not len(gts):
                continue
            overlaps = box_iou(priors, gts)  # (N, G)
            distances = torch.cdist(pc, (gts[:, :2] + gts[:, 2:]) / 2)  # (N, G)
            cands, start = [], 0
            for n in num_level_priors:
                k = min(self.topk, n)
                cands.append(distances[start:start + n].topk(k, dim=0, largest=False).indices + start)  # (k, G)
                start += n
            cand = torch.cat(cands)  # (K, G)
            cand_iou = overlaps.gather(0, cand)
            thr = cand_iou.mean(0) + cand_iou.std(0)
            c = pc[cand]  # (K, G, 2)
            inside = torch.cat([c - gts[:, :2], gts[:, 2:] - c], -1).amin(-1) > 0.01
            pos = (cand_iou >= thr) & inside
            masked = torch.full_like(overlaps, -1.0)  # (N, G)
            cols = torch.arange(len(gts)).expand_as(cand)
            masked[cand[pos], cols[pos]] = cand_iou[pos]
            best, arg = masked.max(dim=1)
            out[b] = torch.where(best >= 0, keep[arg], -1)
        return out


def make_inputs(batch: int, size: int, num_gts: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    gen = YOLOAnchorGenerator(base_sizes=YOLOV4_COCO_ANCHORS, strides=list(STRIDES))
    grid = gen.grid_priors([(size // s, size // s) for s in STRIDES], "cpu")
    priors, strides, counts = grid
    n = priors.shape[0]
    wh = 4 + torch.rand(batch, num_gts, 2, generator=g) * 252
    xy = torch.rand(batch, num_gts, 2, generator=g) * (size - wh)
    gt_boxes = torch.cat([xy, xy + wh], -1)
    gt_mask = torch.ones(batch, num_gts, dtype=torch.bool)
    gt_mask[::2, int(num_gts * 0.8):] = False
    pred_boxes = priors[None].repeat(batch, 1, 1) + torch.randn(batch, n, 4, generator=g) * strides[:, None] * 0.5
    pred_boxes = torch.cat([pred_boxes[..., :2], torch.maximum(pred_boxes[..., 2:], pred_boxes[..., :2] + 1)], -1)
    return dict(priors=grid if not isinstance(grid, tuple) else priors, prior_strides=strides,
                num_level_priors=counts, gt_boxes=gt_boxes,
                gt_labels=torch.randint(0, NUM_CLASSES, (batch, num_gts), generator=g), gt_mask=gt_mask,
                pred_boxes=pred_boxes, pred_scores=torch.rand(batch, n, NUM_CLASSES, generator=g) ** 4)


def measure_one(name: str, args: argparse.Namespace) -> dict:
    """Run one assigner (this process is its own): median time, peak RSS growth, positives."""
    torch.set_num_threads(args.threads)
    x = make_inputs(args.batch, args.size, args.gts)
    assigner = ASSIGNERS[name]()
    kwargs = {k: x[k] for k in ("num_level_priors", "prior_strides", "pred_boxes", "pred_scores")}
    base = status_mib("VmRSS")
    can_reset = reset_peak()  # else the peak may include building the inputs
    times, res = [], None
    for i in range(args.repeat + 1):
        t0 = time.perf_counter()
        res = assigner.assign(x["priors"], x["gt_boxes"], x["gt_labels"], x["gt_mask"], **kwargs)
        if i:  # the first run warms up
            times.append(time.perf_counter() - t0)
    peak = status_mib("VmHWM") if can_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gt_index = res if isinstance(res, torch.Tensor) else res.gt_index
    agree = ratio = None
    if isinstance(res, torch.Tensor):
        # The reference must agree with ATSSAssigner. The speed ratio is taken here, alternating
        # the two, because a shared machine's speed drifts between processes.
        ours = ATSSAssigner(topk=9)
        agree = float((ours.assign(x["priors"], x["gt_boxes"], x["gt_labels"], x["gt_mask"], **kwargs).gt_index
                       == gt_index).float().mean())
        pairs = []
        for _ in range(args.repeat):
            t = []
            for a in (assigner, ours):
                t0 = time.perf_counter()
                a.assign(x["priors"], x["gt_boxes"], x["gt_labels"], x["gt_mask"], **kwargs)
                t.append(time.perf_counter() - t0)
            pairs.append(t[0] / t[1])
        ratio = statistics.median(pairs)
    return dict(time_ms=statistics.median(times) * 1000, peak_mib=peak - base,
                num_pos=int((gt_index >= 0).sum()), agree=agree, ratio=ratio)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--gts", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)  # internal: one assigner per process
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure_one(args.only, args)))
        return 0
    n = sum((args.size // s) ** 2 * 3 for s in STRIDES)

    print(f"batch {args.batch}, {args.size} px, {n} priors (3 anchors/location), {args.gts} GT slots/image, "
          f"{args.threads} threads, torch {torch.__version__}, median of {args.repeat}; {load_line()}\n")
    print("| assigner | time (ms) | peak RSS growth (MiB) | positives |")
    print("|---|---:|---:|---:|")
    rows = {}
    for name in ASSIGNERS:
        cmd = [sys.executable, __file__, "--only", name, "--batch", str(args.batch), "--size", str(args.size),
               "--gts", str(args.gts), "--repeat", str(args.repeat), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {name} | {row['time_ms']:.0f} | {row['peak_mib']:.0f} | {row['num_pos']} |", flush=True)
    print(f"\n{load_line()} after")
    ours, ref = rows["ATSSAssigner(topk=9)"], rows["ATSS per-image loop (reference)"]
    print(f"\nATSS batched vs per-image loop: {ref['ratio']:.1f}x faster (runs alternated in one process), "
          f"peak memory {ref['peak_mib']:.0f} -> {ours['peak_mib']:.0f} MiB; "
          f"same assignment on {ref['agree'] * 100:.2f}% of priors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
