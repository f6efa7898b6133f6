"""COCO evaluation backends side by side: pycocotools vs faster-coco-eval.

Detections: ~20k boxes on coco128's ground truth (every GT jittered a few times at decreasing scores,
plus random false positives, mostly at low scores as a real detector's output is). Both backends get
the same ground-truth json and the same result list in the same run; the benchmark checks that the 12
summary statistics are identical and reports the time ratio.

    .venv-bench/bin/python benchmarks/coco_eval.py [--dets 20000] [--repeat 3]

faster-coco-eval is installed only in the benchmark's environment (`make bench-setup`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ANN = ROOT.parent / "shared" / "data" / "coco128" / "annotations" / "instances_train2017.json"


def make_detections(gt: dict, total: int, seed: int = 0) -> list[dict]:
    """Jittered copies of every GT plus random false positives, ``total`` detections in all."""
    rng = np.random.default_rng(seed)
    images = {im["id"]: im for im in gt["images"]}
    cat_ids = [c["id"] for c in gt["categories"]]
    dets: list[dict] = []
    anns = [a for a in gt["annotations"] if not a.get("iscrowd", 0)]
    copies = max(1, total // (4 * len(anns)))
    for a in anns:
        x, y, w, h = a["bbox"]
        for k in range(copies):
            j = rng.normal(0, 0.05 * (k + 1), 4)
            dets.append(dict(image_id=a["image_id"], category_id=a["category_id"],
                             bbox=[x + j[0] * w, y + j[1] * h, w * (1 + j[2]), h * (1 + j[3])],
                             score=float(rng.uniform(0.3, 1.0) / (k + 1))))
    image_ids = list(images)
    while len(dets) < total:
        im = images[image_ids[int(rng.integers(len(image_ids)))]]
        w, h = rng.uniform(4, im["width"] / 2), rng.uniform(4, im["height"] / 2)
        dets.append(dict(image_id=im["id"], category_id=int(rng.choice(cat_ids)),
                         bbox=[rng.uniform(0, im["width"] - w), rng.uniform(0, im["height"] - h), w, h],
                         score=float(rng.beta(0.5, 8))))  # mostly low scores
    return dets[:total]


def run_backend(name: str, gt_path: Path, dets: list[dict]) -> tuple[float, np.ndarray]:
    if name == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval as Eval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as Eval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        t0 = time.perf_counter()
        dt = gt.loadRes(dets)
        ev = Eval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        elapsed = time.perf_counter() - t0
    return elapsed, np.asarray(ev.stats[:12], dtype=np.float64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dets", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not ANN.exists():
        print(f"coco128 not found at {ANN}; nothing to measure")
        return 0
    gt = json.loads(ANN.read_text())
    dets = make_detections(gt, args.dets)
    backends = ["pycocotools"]
    try:
        import faster_coco_eval  # noqa: F401

        backends.append("faster-coco-eval")
    except ImportError:
        print("faster-coco-eval is not installed here (run `make bench-setup` and use .venv-bench); "
              "measuring pycocotools alone")
    times: dict[str, float] = {}
    stats: dict[str, np.ndarray] = {}
    for _ in range(args.repeat):
        for name in backends:
            t, s = run_backend(name, ANN, dets)
            times[name] = min(times.get(name, float("inf")), t)
            stats[name] = s
    print(f"\n## COCO evaluation: {len(dets)} detections on coco128 ({len(gt['annotations'])} GT), "
          f"best of {args.repeat}")
    print(f"python {platform.python_version()}, {platform.machine()}, {platform.processor() or 'cpu'}\n")
    print("| backend | time (s) | ratio vs pycocotools | AP | AP50 | identical stats |")
    print("|---|---|---|---|---|---|")
    ref = stats["pycocotools"]
    for name in backends:
        same = bool(np.array_equal(stats[name], ref)) or bool(np.allclose(stats[name], ref, atol=1e-12))
        print(f"| {name} | {times[name]:.3f} | {times[name] / times['pycocotools']:.2f}x | "
              f"{stats[name][0]:.4f} | {stats[name][1]:.4f} | {same} |")
    if len(backends) == 2 and not np.allclose(stats[backends[1]], ref, atol=1e-9):
        print("\nstatistics differ:", ref.tolist(), stats[backends[1]].tolist())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
