"""Time of the loss pipeline (decode, assign, sample, targets, losses; forward and backward) within a
training step: data / network forward + backward / loss pipeline.

    python benchmarks/loss_pipeline.py [--config configs/yolov8s_tal.py] [--batch 16] [--size 640]
        [--assigner NAME] [--data coco128|random] [--model-batch 2] [--device cuda]

``--config``: any config with a ``model`` (default ``configs/common/models/yolov4.py``, the YOLOv4
head with 3 anchors per location; ``configs/yolov8s_tal.py`` is YOLOv8-s with its decoupled DFL head
and TAL), its own assigner unless ``--assigner`` names a preset or a call. The three parts of a step:

* data: seconds per batch of ``--batch`` images from the training loader (``--data coco128``: the
  coco128 images beside the repo through the YOLOv8 / YOLOv4 training pipeline, mosaic + affine +
  HSV + flip at ``--size``, ``--workers`` workers, as ``configs/common/data/coco128.py`` builds it;
  in training the workers run beside the network, so this is what a step waits at most);
* network forward + backward: the detector's forward and backward on random images, without the
  loss; on CPU measured at ``--model-batch`` (default 2: one YOLOv8-s step at batch 16 takes long on
  a 2-core CPU) and scaled linearly to ``--batch``, which the table says;
* loss pipeline: the head's pipeline on the initialised head's raw outputs (random features, as
  leaves) against the GTs of one loader batch (or ``--gts`` random GTs per image with
  ``--data random``), forward and backward.

Prints a markdown table; the target is a pipeline under 10% of the step.
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
COCO128 = ROOT / "configs" / "common" / "data" / "coco128.py"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIG), help="a config with a model (default: the YOLOv4 model)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--gts", type=int, default=8, help="GTs per image with --data random (COCO averages 7.3)")
    p.add_argument("--assigner", default=None, help="a preset or a call; default: the config's own")
    p.add_argument("--data", choices=["coco128", "random"], default="coco128")
    p.add_argument("--workers", type=int, default=2)
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


def build_model(config: str, assigner: str | None):
    from detkit.assigners.presets import assigner_call
    from detkit.config import instantiate, load_config

    overrides = [f"model.head.loss.assigner={assigner_call(assigner)}"] if assigner else []
    cfg = load_config(config, overrides=overrides)
    return instantiate(cfg.model)


def data_batches(args: argparse.Namespace, size_divisor: int, count: int) -> tuple[list[dict], float]:
    """``count`` training batches of coco128 through its training pipeline, and the median seconds
    per batch of the loader (after its first batch, which starts the workers)."""
    from detkit.config import instantiate, load_config
    from detkit.data.loader import build_dataloader

    cfg = load_config(str(COCO128))  # 640 px, as its pipeline is written
    dataset = instantiate(cfg.data.train.dataset)
    loader = build_dataloader(dataset, args.batch, num_workers=args.workers, shuffle=True, seed=0,
                              size_divisor=size_divisor, persistent_workers=False)
    batches, times = [], []
    it = iter(loader)
    t0 = time.perf_counter()
    for _ in range(count + 1):
        batches.append(next(it))
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
    return batches[1:], statistics.median(times[1:])


def time_pipeline(model, args: argparse.Namespace, device: torch.device, batch: dict) -> dict[str, float]:
    head = model.head
    strides = head.prior_generator.strides
    sizes = [(args.size // int(s), args.size // int(s)) for s in strides]
    grid = head.prior_generator.grid_priors(sizes, device)
    priors, prior_strides, counts = grid
    n = priors.shape[0]
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(args.batch, k, h, w, generator=g).to(device) for k, (h, w) in zip(head.in_channels, sizes)]
    with torch.no_grad():  # the initialised head's raw maps on random features, as leaves
        raw = [r.detach().requires_grad_() for r in head(feats)]
    pipeline = head.loss_pipeline

    def full():
        out = pipeline(head.flatten(raw), batch)
        total = sum(v for k, v in out.items() if k.startswith("loss_"))
        torch.autograd.grad(total, raw)

    def assign_only():
        with torch.no_grad():
            preds = head.flatten([r.detach() for r in raw])
            boxes, scores = pipeline.decode_predictions(preds)
            pipeline.assigner.assign(priors if isinstance(grid, tuple) else grid,
                                     batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"],
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
    model = build_model(args.config, args.assigner).to(device)
    head = model.head
    data_time = None
    if args.data == "coco128":
        batches, data_time = data_batches(args, int(max(head.prior_generator.strides)), 3)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batches[0].items()}
        gts = f"{int(batch['gt_mask'].sum()) / args.batch:.1f} coco128 GTs/image (mosaic)"
    else:
        batch = random_batch(args.batch, args.gts, args.size, head.num_classes, device)
        gts = f"{args.gts} random GTs/image"
    t = time_pipeline(model, args, device, batch)
    ms = lambda s: f"{s * 1e3:.1f}"  # noqa: E731
    env = f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        env = f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    assigner = args.assigner or type(head.assigner).__name__
    print(f"{Path(args.config).name}: loss pipeline, batch {args.batch}, {args.size}x{args.size}, {t['priors']} "
          f"priors, {head.num_classes} classes, {gts}, assigner {assigner}, {device.type} ({env})\n")
    model_time, note = None, ""
    if not args.skip_model:
        mb = args.model_batch or (args.batch if device.type == "cuda" else min(2, args.batch))
        model_time = time_model(model, args, device, mb) * args.batch / mb
        if mb != args.batch:
            note = f" (measured at batch {mb}, scaled x{args.batch / mb:g})"
    parts = [(f"data (loader, per batch, {args.workers} workers)", data_time),
             (f"network forward + backward{note}", model_time), ("loss pipeline, forward + backward", t["pipeline"])]
    step = sum(v for _, v in parts if v is not None)
    print("| part of a training step | time (ms) | share of the step |")
    print("|---|---:|---:|")
    for name, v in parts:
        print(f"| {name} | {ms(v) if v is not None else 'n/a'} | {f'{100 * v / step:.1f}%' if v is not None else ''} |")
    assign = t["assign"]
    print(f"| (of the pipeline: decode + assign alone, no grad) | {ms(assign)} | {100 * assign / step:.1f}% |")
    print(f"| step | {ms(step)} | 100% |")
    if model_time:
        share = t["pipeline"] / step
        verdict = "meets" if share < 0.1 else "misses"
        print(f"\nloss pipeline / step = {100 * share:.1f}% ({verdict} the < 10% target); without the data part "
              f"{100 * t['pipeline'] / (model_time + t['pipeline']):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
