"""Training-step time of the demo model with each CSPDarknet layout, side by side in one run.

    python benchmarks/backbone_layouts.py [--batch 16] [--size 320] [--repeats 5] [--device cpu]

The model is ``configs/shapes_atss.py``'s (CSPDarknet at depth 0.33 / width 0.125, PAN with SPP,
YOLO head); only ``model.backbone.arch`` (and its default activation) changes between rows:

* ``yolov4``: 3x3 stride-1 stem at full resolution, five strided CSP stages, Mish;
* ``csp-v5``: the same stem with C3 blocks and SiLU;
* ``yolov5``: YOLOv5's 6x6 stride-2 stem as stage 1, four C3 stages, SiLU (the demo's layout).

One step is the network's forward and backward on random images (no loss, no optimizer), as
:func:`step_time` says. The rows are measured round-robin (one step of each layout per round) so a
change in machine load hits all of them alike. Prints a markdown table with the median time per
step and the speed-up over ``yolov4``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "configs" / "shapes_atss.py"
LAYOUTS = ("yolov4", "csp-v5", "yolov5")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (after one warm-up round)")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def build(arch: str, device: torch.device) -> nn.Module:
    """The demo model with ``model.backbone.arch=arch`` (the arch's own activation), in train mode."""
    from detkit.config import instantiate, load_config

    cfg = load_config(CONFIG, [f"model.backbone.arch='{arch}'"])
    return instantiate(cfg.model).to(device).train()


def step_time(model: nn.Module, images: torch.Tensor) -> float:
    """Seconds for one forward + backward of ``images (B, 3, H, W)`` through the raw head outputs."""
    if images.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    raw = model(images)
    sum(r.float().sum() for r in raw).backward()
    if images.is_cuda:
        torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    models = {arch: build(arch, device) for arch in LAYOUTS}
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    times: dict[str, list[float]] = {arch: [] for arch in LAYOUTS}
    for round_ in range(args.repeats + 1):
        for arch, model in models.items():
            t = step_time(model, images)
            if round_:  # round 0 warms up allocators and kernels
                times[arch].append(t)
    base = statistics.median(times["yolov4"])
    print(f"# CSPDarknet layouts: demo model, batch {args.batch}, {args.size} px, {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}")
    print("| layout | params | step (s, median) | speed-up vs yolov4 |")
    print("|---|---|---|---|")
    for arch, model in models.items():
        med = statistics.median(times[arch])
        params = sum(p.numel() for p in model.parameters())
        print(f"| {arch} | {params:,} | {med:.3f} | {base / med:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
