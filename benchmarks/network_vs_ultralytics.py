"""detkit's network next to Ultralytics' on identical architectures and weights: training step and inference, CPU.

    .venv-bench/bin/python benchmarks/network_vs_ultralytics.py             # <= 4 min on a quiet 2-core machine
    .venv-bench/bin/python benchmarks/network_vs_ultralytics.py --quick     # batch 2 / 320 px, a smoke run
    .venv-bench/bin/python benchmarks/network_vs_ultralytics.py --models yolov8n --train-rounds 5

For each model (YOLOv8n, YOLOv8s, YOLO11n, YOLO26n; 80 classes) a randomly initialised Ultralytics
``DetectionModel`` (random BatchNorm statistics and prediction biases:
``parity_losses_ultralytics.random_ultralytics_model``) is converted to detkit with
``detkit.models.convert.ultralytics`` and loaded into detkit's model from its config (``strict=True``):
both sides hold the same weights and compute the same function (``make parity`` checks the outputs,
losses and gradients).

Training step (batch 16 / 640 px by default, noise images, 8 GTs an image): the four phases timed apart,
forward (training-mode network), loss pipeline (assignment and loss terms), backward, optimizer step
(the same ``torch.optim.SGD`` with Nesterov momentum on both sides, so the step measures the parameter
layout, not two optimizers). Ultralytics: ``model(images)``, ``model.loss(batch, preds)``, its sum backward;
detkit: ``model(images)``, ``model.head.loss(raw, batch)``, the ``loss_*`` sum x B backward.

Inference at batch 1 and 8 (640 px): the network with its decoding, no NMS (Ultralytics' eval-mode
forward, which for YOLO26 includes its top-300 one-to-one selection; detkit's ``forward_decoded``),
unfused and fused on each side (Ultralytics' ``model.fuse()`` on a copy; detkit's
``detkit.models.fuse.fused_copy``; both drop YOLO26's one-to-many branch, which its inference does not read,
while the unfused models compute both branches), and detkit's fused model in channels-last memory format ("chlast",
against the same rounds of Ultralytics' fused model), under ``torch.inference_mode``. The default run
takes about 4 minutes on a quiet 2-core machine (estimated from the step times; more rounds with
``--train-rounds`` / ``--infer-rounds``).

Rounds alternate the two sides (each round times every case once on each side, detkit first in even rounds,
Ultralytics first in odd ones), after one untimed warm-up of each (training: a full step of each side per model,
the first model's included). Printed: best of N and median in ms
and the ratio detkit / Ultralytics of each, with the load average before and after: on a shared machine
medians swing 2-4x under load while minima hold. Threads: 2 (``torch.set_num_threads(2)``).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_VERBOSE", "False")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(ROOT / "benchmarks"))  # the helpers beside this file

import torch  # noqa: E402
from parity_losses_ultralytics import convert, detkit_model, random_ultralytics_model  # noqa: E402
from torch import Tensor  # noqa: E402

from detkit.models.fuse import fused_copy  # noqa: E402

MODELS = ("yolov8n", "yolov8s", "yolo11n", "yolo26n")
PHASES = ("forward", "loss", "backward", "step")
NUM_CLASSES = 80
GTS_PER_IMAGE = 8
THREADS = 2


def make_batches(batch: int, size: int, criterion: Any, seed: int = 0) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Ultralytics' training batch (``img``, ``batch_idx``, ``cls``, normalised ``bboxes``) and detkit's
    (padded pixel ``xyxy`` GTs as Ultralytics' own ``preprocess`` makes them: bit-identical boxes)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g)
    n = batch * GTS_PER_IMAGE
    centre = torch.rand(n, 2, generator=g) * 0.8 + 0.1
    side = torch.exp(torch.empty(n, 2).uniform_(-3.5, -0.7, generator=g))  # 3 % .. 50 % of the side
    xywh = torch.cat([centre, torch.minimum(side, 2 * torch.minimum(centre, 1 - centre))], 1)
    ultra = {"img": images, "batch_idx": torch.arange(batch).repeat_interleave(GTS_PER_IMAGE).float(),
             "cls": torch.randint(NUM_CLASSES, (n, 1), generator=g).float(), "bboxes": xywh}
    targets = torch.cat((ultra["batch_idx"].view(-1, 1), ultra["cls"], xywh), 1)
    scale = torch.tensor([size, size, size, size], dtype=torch.float32)
    loss = getattr(criterion, "one2many", criterion)  # YOLO26: E2ELoss holds a v8DetectionLoss per branch
    padded = loss.preprocess(targets, batch, scale_tensor=scale)  # (B, M, 5): class, xyxy pixels
    boxes = padded[..., 1:5]
    ours = {"images": images, "gt_boxes": boxes, "gt_labels": padded[..., 0].long(), "gt_mask": boxes.sum(-1) > 0,
            "img_shape": torch.tensor([[size, size]] * batch)}
    return ultra, ours


class Pair:
    """One architecture on both sides: the models, their optimizers and fused copies."""

    def __init__(self, name: str) -> None:
        self.name = name
        family, scale = name[:-1], name[-1]
        self.ultra = random_ultralytics_model(name, seed=0, num_classes=NUM_CLASSES)
        self.ours = detkit_model(family, scale, convert(self.ultra, family, scale), num_classes=NUM_CLASSES)
        self.ultra.criterion = self.ultra.init_criterion()
        self.sgd = {side: torch.optim.SGD(m.parameters(), lr=1e-5, momentum=0.937, nesterov=True)
                    for side, m in (("detkit", self.ours), ("ultralytics", self.ultra))}
        self.fused_ultra = copy.deepcopy(self.ultra).eval().fuse()
        self.fused_ours = fused_copy(self.ours)
        self.fused_cl_ours = fused_copy(self.ours).to(memory_format=torch.channels_last)

    def train_step(self, side: str, batches: tuple[dict[str, Tensor], dict[str, Tensor]]) -> dict[str, float]:
        """Seconds of each phase of one training step on ``side``."""
        ultra_batch, our_batch = batches
        model = self.ours if side == "detkit" else self.ultra
        model.train()
        images = our_batch["images"]
        t0 = time.perf_counter()
        if side == "detkit":
            raw = self.ours(images)
            t1 = time.perf_counter()
            losses = self.ours.head.loss(raw, our_batch)
            total = sum(v for k, v in losses.items() if k.startswith("loss_")) * images.shape[0]
        else:
            preds = self.ultra(images)
            t1 = time.perf_counter()
            loss, _ = self.ultra.loss(ultra_batch, preds)
            total = loss.sum()
        t2 = time.perf_counter()
        total.backward()
        t3 = time.perf_counter()
        self.sgd[side].step()
        self.sgd[side].zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        return dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)))

    def infer(self, side: str, fused: bool, images: Tensor, channels_last: bool = False) -> float:
        """Seconds of one inference forward (decoded outputs, no NMS); ``channels_last``: detkit's fused model
        and its input in channels-last memory format (Ultralytics' side as without)."""
        if side == "detkit":
            model = self.fused_ours if fused else self.ours.eval()
            if channels_last:
                model, images = self.fused_cl_ours, images.contiguous(memory_format=torch.channels_last)
            run: Callable[[], Any] = lambda: model.forward_decoded(images)  # noqa: E731
        else:
            umodel = self.fused_ultra if fused else self.ultra.eval()
            run = lambda: umodel(images)  # noqa: E731
        with torch.inference_mode():
            t0 = time.perf_counter()
            run()
            return time.perf_counter() - t0


def summary(ours: list[float], theirs: list[float]) -> str:
    """``best / median`` of both sides in ms and the ratios detkit / Ultralytics."""
    b0, b1, m0, m1 = min(ours), min(theirs), statistics.median(ours), statistics.median(theirs)
    return (f"{b0 * 1e3:9.1f} {b1 * 1e3:9.1f} {b0 / b1:6.2f}x | {m0 * 1e3:9.1f} {m1 * 1e3:9.1f} {m0 / m1:6.2f}x")


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--quick", action="store_true", help="batch 2 / 320 px training, 320 px inference, 2 rounds")
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--train-size", type=int, default=640)
    p.add_argument("--infer-size", type=int, default=640)
    p.add_argument("--infer-batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--train-rounds", type=int, default=2)
    p.add_argument("--infer-rounds", type=int, default=3)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-infer", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.train_batch, args.train_size, args.infer_size = 2, 320, 320
        args.train_rounds, args.infer_rounds = 2, 2
    try:
        import ultralytics
    except ImportError:
        print("ultralytics is not installed here: run from .venv-bench (make bench-setup)", file=sys.stderr)
        return 2
    torch.set_num_threads(THREADS)
    start, load_before = time.perf_counter(), load()
    print(f"torch {torch.__version__}, ultralytics {ultralytics.__version__}, {THREADS} threads, "
          f"load average (1/5/15 min) {load_before}")
    pairs = [Pair(name) for name in args.models]
    header = f"{'':26s} {'detkit':>9s} {'ultra':>9s} {'ratio':>7s} | {'detkit':>9s} {'ultra':>9s} {'ratio':>7s}"
    if not args.skip_train:
        print(f"\ntraining step, batch {args.train_batch} / {args.train_size} px, ms: best of "
              f"{args.train_rounds} | median")
        print(header)
        for pair in pairs:
            batches = make_batches(args.train_batch, args.train_size, pair.ultra.criterion)
            times: dict[str, dict[str, list[float]]] = {side: {k: [] for k in PHASES} for side in
                                                        ("detkit", "ultralytics")}
            for side in ("detkit", "ultralytics"):  # warm-up
                pair.train_step(side, batches)
            for r in range(args.train_rounds):
                for side in (("detkit", "ultralytics") if r % 2 == 0 else ("ultralytics", "detkit")):
                    for k, v in pair.train_step(side, batches).items():
                        times[side][k].append(v)
            for k in PHASES:
                print(f"{pair.name + ' ' + k:26s} {summary(times['detkit'][k], times['ultralytics'][k])}")
            totals = {s: [sum(t[k][i] for k in PHASES) for i in range(args.train_rounds)] for s, t in times.items()}
            print(f"{pair.name + ' total':26s} {summary(totals['detkit'], totals['ultralytics'])}")
            del batches
    if not args.skip_infer:
        print(f"\ninference (network + decoding, no NMS), {args.infer_size} px, ms: best of "
              f"{args.infer_rounds} | median")
        print(header)
        for pair in pairs:
            for batch in args.infer_batches:
                images = torch.rand(batch, 3, args.infer_size, args.infer_size,
                                    generator=torch.Generator().manual_seed(batch))
                fused_ultra: list[float] = []
                for fused, cl in ((False, False), (True, False), (True, True)):
                    sides = ("detkit",) if cl else ("detkit", "ultralytics")  # chlast: against the fused row's
                    for side in sides:
                        pair.infer(side, fused, images, cl)  # warm-up
                    runs: dict[str, list[float]] = {"detkit": [], "ultralytics": fused_ultra if cl else []}
                    for r in range(args.infer_rounds):
                        for side in (sides if r % 2 == 0 else sides[::-1]):
                            runs[side].append(pair.infer(side, fused, images, cl))
                    if fused and not cl:
                        fused_ultra = runs["ultralytics"]
                    label = f"{pair.name} b{batch} {'fused' if fused else 'unfused'}{' chlast' if cl else ''}"
                    print(f"{label:26s} {summary(runs['detkit'], runs['ultralytics'])}")
    print(f"\nload average before {load_before}, after {load()}; {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
