"""Training-loader throughput: detkit vs Ultralytics, side by side on coco128.

Both loaders run their default YOLO training augmentation at 640 (mosaic, random affine with
translate 0.1 / scale 0.5, HSV 0.015/0.7/0.4, horizontal flip 0.5), batch 16, 2 workers, on the
same 128 images. Each side warms up for one epoch (worker start-up, Ultralytics' in-memory image
buffer fills) and is then timed over ``--epochs`` epochs; sides alternate for ``--rounds`` rounds
and the best round of each is reported.

    python benchmarks/data_loader.py                      # detkit alone when ultralytics is absent
    .venv-bench/bin/python benchmarks/data_loader.py      # both (make bench-setup)

Ultralytics is never a dependency of detkit: its side runs only when ``import ultralytics`` works.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_COCO128 = os.environ.get("DETKIT_COCO128") or str(REPO / ".." / "shared" / "data" / "coco128")


def time_loader(loader: Iterable, epochs: int, count) -> float:
    """Images per second over ``epochs`` passes after one warm-up pass."""
    for _ in loader:  # warm-up epoch
        pass
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            n += count(batch)
    return n / (time.perf_counter() - start)


def detkit_loader(root: str, size: int, batch: int, workers: int, cache: int, float_images: bool):
    from detkit.data import Mosaic, RandomAffine, RandomFlip, RandomHSV, YoloDataset, build_dataloader

    pipeline = [
        Mosaic(size=size, p=1.0),
        RandomAffine(size=size, degrees=0.0, translate=0.1, scale=0.5, shear=0.0),
        RandomHSV(h=0.015, s=0.7, v=0.4),
        RandomFlip(p=0.5),
    ]
    ds = YoloDataset(os.path.join(root, "images", "train2017"), os.path.join(root, "names.txt"),
                     pipeline=pipeline, cache_size=cache)
    return build_dataloader(ds, batch_size=batch, num_workers=workers, shuffle=True, seed=0, pin_memory=False,
                            float_images=float_images)


def ultralytics_loader(root: str, size: int, batch: int, workers: int, tmp: str):
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset
    from ultralytics.utils import DEFAULT_CFG

    # Ultralytics writes a labels cache beside the labels folder: point it at links in a temp dir
    # so the shared data stay untouched.
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(tmp, sub), exist_ok=True)
        link = os.path.join(tmp, sub, "train2017")
        if not os.path.exists(link):
            os.symlink(os.path.abspath(os.path.join(root, sub, "train2017")), link)
    names = [n.strip() for n in Path(root, "names.txt").read_text().splitlines() if n.strip()]
    cfg = get_cfg(DEFAULT_CFG, dict(imgsz=size, batch=batch, workers=workers, cache=False))
    data = {"names": dict(enumerate(names)), "nc": len(names), "channels": 3}
    ds = build_yolo_dataset(cfg, os.path.join(tmp, "images", "train2017"), batch, data, mode="train")
    return build_dataloader(ds, batch, workers, shuffle=True, rank=-1, pin_memory=False, device="cpu")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_COCO128, help="coco128 root (YOLO layout)")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cache", type=int, default=256,
                        help="detkit: decoded images kept per worker (Ultralytics keeps up to batch*8)")
    args = parser.parse_args()
    if not Path(args.data, "images", "train2017").is_dir():
        print(f"coco128 not found at {args.data}; set DETKIT_COCO128 or --data")
        return 1
    import cv2
    import torch

    print(f"coco128 at {args.data}: {args.size} px, batch {args.batch}, {args.workers} workers, "
          f"torch {torch.__version__}, opencv {cv2.__version__}, {os.cpu_count()} CPUs")
    try:
        import ultralytics
    except ImportError as e:
        ultralytics = None
        print(f"ultralytics not importable ({e}); detkit's figure alone. Run with .venv-bench/bin/python "
              "(make bench-setup) for the side-by-side comparison.")
    # "detkit uint8" hands over what Ultralytics' loader does (uint8, the trainer converts on the
    # device); "detkit float32" also converts to float32 0..1 on the CPU (the batch contract).
    sides = {"detkit uint8": True, "detkit float32": True, "ultralytics": ultralytics is not None}
    results: dict[str, list[float]] = {k: [] for k, on in sides.items() if on}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for side in results:
                if side == "ultralytics":
                    loader = ultralytics_loader(args.data, args.size, args.batch, args.workers, tmp)
                    count = lambda b: len(b["img"])  # noqa: E731
                else:
                    loader = detkit_loader(args.data, args.size, args.batch, args.workers, args.cache,
                                           float_images=side.endswith("float32"))
                    count = lambda b: len(b["images"])  # noqa: E731
                results[side].append(time_loader(loader, args.epochs, count))
                del loader
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} img/s" for k, v in results.items()), flush=True)
    best = {k: max(v) for k, v in results.items()}
    for side, value in best.items():
        name = f"ultralytics {ultralytics.__version__}" if side == "ultralytics" else side
        print(f"{name} training loader: {value:.1f} images/s (best of {args.rounds})")
    if "ultralytics" in best:
        ratio = best["detkit uint8"] / best["ultralytics"]
        print(f"speed-up detkit uint8 / ultralytics: {ratio:.2f}x (target >= 1.2x); "
              f"detkit float32 / ultralytics: {best['detkit float32'] / best['ultralytics']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
