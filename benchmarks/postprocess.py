"""Post-processing of one 640 image: detkit (decode + score filter + class-aware batched NMS) vs
Ultralytics' ``non_max_suppression`` on the equivalent tensor.

    .venv-bench/bin/python benchmarks/postprocess.py [--repeat 50]

Input: raw YOLO head outputs for 25,200 priors (3 anchors x (80² + 40² + 20²)) x 80 classes drawn
from a realistic distribution: objectness logits mostly very low, 30 objects each lit up on a
handful of neighbouring priors with one dominant class. detkit's side gets the *raw logits* and
does sigmoid + decode + filtering + NMS (``detkit.models.postprocess.postprocess_single``).
Ultralytics' side gets the tensor its NMS expects, already decoded: ``(1, 4 + 80, 25200)`` with
xywh boxes and class confidences ``sigmoid(obj) * sigmoid(cls)`` — so its time excludes decoding.
Same settings on both sides: score threshold 0.001, IoU 0.65, at most 300 detections, 30,000
candidates before NMS; measured for best-class (Ultralytics' default) and multi-label. CPU, best of
``--repeat`` after warm-up. Target: detkit <= 0.5x Ultralytics' time.
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import time
from collections.abc import Callable

import torch

from detkit.anchors import YOLOV4_COCO_ANCHORS, YOLOAnchorGenerator
from detkit.boxes import xyxy_to_cxcywh
from detkit.coders import YOLOCoder
from detkit.models.postprocess import postprocess_single

NUM_CLASSES, SIZE = 80, 640


def make_raw(seed: int = 0, objects: int = 30) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = YOLOAnchorGenerator(YOLOV4_COCO_ANCHORS, strides=[8, 16, 32])
    priors, strides, _ = gen.grid_priors([(SIZE // s, SIZE // s) for s in (8, 16, 32)], "cpu")
    g = torch.Generator().manual_seed(seed)
    n = priors.shape[0]
    raw = torch.empty(n, 5 + NUM_CLASSES)
    raw[:, :2] = torch.randn(n, 2, generator=g)
    raw[:, 2:4] = torch.randn(n, 2, generator=g) * 0.5
    raw[:, 4] = torch.randn(n, generator=g) * 2.0 - 8.0  # objectness: mostly ~sigmoid(-8)
    raw[:, 5:] = torch.randn(n, NUM_CLASSES, generator=g) * 2.0 - 5.0
    centres = torch.randint(0, n - 8, (objects,), generator=g)
    for c in centres.tolist():  # a few neighbouring priors fire for each object
        cls = int(torch.randint(0, NUM_CLASSES, (1,), generator=g))
        raw[c:c + 6, 4] = torch.rand(6, generator=g) * 6 - 1
        raw[c:c + 6, 5 + cls] = torch.rand(6, generator=g) * 4 + 1
    return raw, priors, strides


def ultralytics_input(raw: torch.Tensor, priors: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """``(1, 4 + C, N)``: decoded xywh boxes and obj * cls confidences, as Ultralytics' NMS takes."""
    boxes = YOLOCoder(scale_x_y=1.1).decode(priors, raw[:, :4], strides)
    conf = raw[:, 5:].sigmoid() * raw[:, 4:5].sigmoid()
    return torch.cat([xyxy_to_cxcywh(boxes), conf], 1).T[None].contiguous()


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    out = fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw, priors, strides = make_raw()
    coder = YOLOCoder(scale_x_y=1.1)
    try:
        import ultralytics
        from ultralytics.utils.nms import non_max_suppression

        uver = ultralytics.__version__
    except ImportError:
        uver = None
        print("ultralytics is not installed here (run `make bench-setup`, use .venv-bench): detkit alone")
    pred = ultralytics_input(raw, priors, strides)
    above = int((pred[0, 4:] > 0.001).sum())
    print(f"\n## Post-processing: one {SIZE}x{SIZE} image, {priors.shape[0]} priors x {NUM_CLASSES} classes, "
          f"{above} (prior, class) scores above 0.001; CPU, {args.threads} threads, best of {args.repeat}")
    print(f"torch {torch.__version__}, ultralytics {uver}, python {platform.python_version()}\n")
    print("| mode | detkit decode+NMS (ms) | Ultralytics NMS (ms) | detkit / Ultralytics "
          "| detections (detkit / Ultralytics) |")
    print("|---|---|---|---|---|")
    for multi_label in (False, True):
        t_dk, dets = best_time(functools.partial(
            postprocess_single, raw, priors, strides, coder, score_thr=0.001, nms_iou_thr=0.65, nms_pre=30000,
            max_per_img=300, multi_label=multi_label), args.repeat)
        n_dk = int(dets["boxes"].shape[0])
        if uver:
            t_u, out = best_time(functools.partial(
                non_max_suppression, pred, conf_thres=0.001, iou_thres=0.65, multi_label=multi_label, max_det=300,
                max_nms=30000, max_time_img=10.0), args.repeat)
            n_u = int(out[0].shape[0])
            print(f"| {'multi-label' if multi_label else 'best class'} | {t_dk * 1e3:.2f} | {t_u * 1e3:.2f} | "
                  f"{t_dk / t_u:.2f}x | {n_dk} / {n_u} |")
        else:
            print(f"| {'multi-label' if multi_label else 'best class'} | {t_dk * 1e3:.2f} | n/a | n/a | {n_dk} / n/a |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
