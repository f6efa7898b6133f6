"""YOLOv10's dual assignment measured: COCO AP of each branch of a one-to-one head, with and without
NMS, and the post-processing time of each (CPU).

    python benchmarks/one2one.py configs/shapes_yolov10_tal.py work_dirs/shapes_yolov10_tal/best.pth

The network runs once per validation batch; its raw maps are kept and every combination
(one-to-many / one-to-one branch x NMS on / off) post-processes the same maps with the config's
settings (score threshold, ``max_per_img``), so the rows differ by post-processing alone. Time is
post-processing per image (decode, score filter, NMS or top-k), median over the validation set,
one image at a time. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detkit.config import instantiate, load_config  # noqa: E402
from detkit.data import build_dataloader  # noqa: E402
from detkit.engine.inference import build_evaluator  # noqa: E402
from detkit.engine.weights import load_weights  # noqa: E402
from detkit.evaluation import detections_to_coco_results  # noqa: E402
from detkit.models.postprocess import undo_letterbox_batch  # noqa: E402

COMBOS = [("one2many", True), ("one2many", False), ("one2one", True), ("one2one", False)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    cfg = load_config(args.config, args.cfg_options)
    model = instantiate(cfg.model)
    load_weights(model, args.checkpoint, strict=True)
    model.eval()
    head = model.head
    if "one2one" not in head.branches:
        raise SystemExit(f"{args.config}: the head has no one-to-one branch (model.head.one2one=True)")
    dataset = instantiate(cfg.data.val.dataset)
    loader = build_dataloader(dataset, 1, num_workers=0, shuffle=False, size_divisor=model.size_divisor)
    cached = []
    with torch.no_grad():
        for batch in loader:
            cached.append((batch, model(batch["images"])))
    evaluator = build_evaluator(dataset)
    cat_ids = getattr(dataset, "cat_ids", None)
    rows = []
    for branch, nms in COMBOS:
        results, times = [], []
        for batch, raw in cached:
            t0 = time.perf_counter()
            dets = head.predict(raw, branch=branch, nms=nms)
            times.append(time.perf_counter() - t0)
            dets = undo_letterbox_batch(dets, batch, batch["images"].shape[-2:])
            results += detections_to_coco_results(dets, batch["image_ids"], cat_ids)
        metrics = evaluator.evaluate(results)
        rows.append((branch, nms, metrics, statistics.median(times) * 1e3, len(results) / len(cached)))
    print(f"{args.config}, {args.checkpoint}: {len(cached)} val images, score_thr {head.test_cfg['score_thr']}, "
          f"max_per_img {head.test_cfg['max_per_img']}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| branch | NMS | AP | AP50 | AP75 | APs | detections / image | post-processing (ms / image) |")
    print("|---|---|---|---|---|---|---|---|")
    for branch, nms, m, ms, per_image in rows:
        print(f"| {branch} | {'yes' if nms else 'no'} | {m['AP']:.3f} | {m['AP50']:.3f} | {m['AP75']:.3f} | "
              f"{m['APs']:.3f} | {per_image:.0f} | {ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
