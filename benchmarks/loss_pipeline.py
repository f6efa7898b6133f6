"""Time of the YOLO loss pipeline (assign + sample + encode + losses, forward and backward)
against the forward + backward of the network it trains.

    python benchmarks/loss_pipeline.py [--batch 16] [--size 640] [--assigner atss] [--device cuda]

Both come from ``configs/common/models/yolov4.py`` (3 anchors per location, 80 classes): the
pipeline is the YOLOv4 head's ``loss_pipeline`` fed with the initialised head's raw outputs on random
features and
random GTs (``--gts`` per image, log-uniform sizes 8..400 px); the network part is the detector's
forward and backward on random images, without the loss. On CPU the network is measured at
``--model-batch`` (default 2: one YOLOv4 step at batch 16 takes minutes on a laptop CPU) and
scaled linearly to ``--batch``, which the table says. ``--skip-model`` times only the pipeline.
Prints a markdown table; the target is a pipeline under 10% of the network's time.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "common" / "models" / "yolov4.py"

ASSIGNERS = {
    "atss": "ATSSAssigner(topk=9)",
    "max_iou": "MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)",
    "grid": "GridAssigner()",
    "simota": "SimOTAAssigner()",
    "task_aligned": "TaskAlignedAssigner()",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--gts", type=int, default=8, help="GTs per image (COCO averages 7.3)")
    p.add_argument("--assigner", choices=sorted(ASSIGNERS), default="atss")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model-batch", type=int, default=None, help="batch for the network (default: --batch on "
                   "GPU, min(2, --batch) on CPU); its time is scaled to --batch")
    p.add_argument("--skip-model", action="store_true")
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def random_batch(b: int, m: int, size: int, num_classes: int, device: torch.device, seed: int = 0) -> dict:
    """Padded GT batch: ``m`` boxes per image (the last image has none, as real batches may)."""
    g = torch.Generator().manual_seed(seed)
    wh = torch.exp(torch.empty(b, m, 2).uniform_(torch.log(torch.tensor(8.0)).item(),
                                                   torch.log(torch.tensor(400.0)).item(), generator=g))
    xy = torch.rand(b, m, 2, generator=g) * (size - wh)
    boxes = torch.cat([xy, xy + wh], dim=-1)
    mask = torch.ones(b, m, dtype=torch.bool)
    mask[-1] = False
    return dict(gt_boxes=boxes.to(device), gt_labels=torch.randint(0, num_classes, (b, m), generator=g).to(device),
                gt_mask=mask.to(device), ignore_boxes=torch.zeros(b, 1, 4, device=device),
                ignore_mask=torch.zeros(b, 1, dtype=torch.bool, device=device))


def build_model(assigner: str):
    from detkit.config import instantiate, load_config

    cfg = load_config(str(CONFIG), overrides=[f"model.head.loss.assigner={ASSIGNERS[assigner]}"])
    return instantiate(cfg.model)


def time_pipeline(model, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    head = model.head
    strides = head.prior_generator.strides
    sizes = [(args.size // int(s), args.size // int(s)) for s in strides]
    priors, prior_strides, counts = head.prior_generator.grid_priors(sizes, device)
    n, c = priors.shape[0], head.num_classes
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(args.batch, k, h, w, generator=g).to(device) for k, (h, w) in zip(head.in_channels, sizes)]
    with torch.no_grad():  # the initialised head's raw maps on random features, as leaves
        raw = [r.detach().requires_grad_() for r in head(feats)]
    batch = random_batch(args.batch, args.gts, args.size, c, device)
    pipeline = head.loss_pipeline

    def full():
        out = pipeline(head.flatten(raw), batch)
        total = sum(v for k, v in out.items() if k.startswith("loss_"))
        torch.autograd.grad(total, raw)

    def assign_only():
        with torch.no_grad():
            preds = head.flatten([r.detach() for r in raw])
            boxes, scores = pipeline.decode_predictions(preds)
            pipeline.assigner.assign(priors, batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"],
                                     num_level_priors=counts, prior_strides=prior_strides,
                                     pred_boxes=boxes, pred_scores=scores)

    return {"priors": n, "assign": timeit(assign_only, device, args.repeats),
            "pipeline": timeit(full, device, args.repeats)}


def time_model(model, args: argparse.Namespace, device: torch.device, model_batch: int) -> float:
    images = torch.rand(model_batch, 3, args.size, args.size, device=device)
    model.train()

    def step():
        raw = model(images)
        torch.autograd.backward([r.float().mean() for r in raw])
        model.zero_grad(set_to_none=True)

    return timeit(step, device, max(1, args.repeats if device.type == "cuda" else 1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.assigner).to(device)
    t = time_pipeline(model, args, device)
    ms = lambda s: f"{s * 1e3:.1f}"  # noqa: E731
    env = f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        env = f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    print(f"YOLOv4 loss pipeline, batch {args.batch}, {args.size}x{args.size}, {t['priors']} priors, "
          f"80 classes, {args.gts} GTs/image, assigner {args.assigner}, {device.type} ({env})\n")
    print("| part | time per step (ms) | share of network fwd+bwd |")
    print("|---|---:|---:|")
    model_time, note = None, ""
    if not args.skip_model:
        mb = args.model_batch or (args.batch if device.type == "cuda" else min(2, args.batch))
        model_time = time_model(model, args, device, mb) * args.batch / mb
        if mb != args.batch:
            note = f" (measured at batch {mb}, scaled x{args.batch / mb:g})"
    share = (lambda s: f"{100 * s / model_time:.1f}%") if model_time else (lambda s: "n/a")
    print(f"| assign only ({args.assigner}, no grad) | {ms(t['assign'])} | {share(t['assign'])} |")
    print(f"| whole loss pipeline, fwd + bwd | {ms(t['pipeline'])} | {share(t['pipeline'])} |")
    if model_time:
        print(f"| network fwd + bwd{note} | {ms(model_time)} | 100% |")
        verdict = "meets" if t["pipeline"] < 0.1 * model_time else "misses"
        print(f"\npipeline / network = {100 * t['pipeline'] / model_time:.1f}% ({verdict} the < 10% target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
