"""Eager vs ``torch.compile`` (via ``detkit.engine.compile.maybe_compile``), side by side in one run:
inference (network forward, and forward + post-processing) and a training step; ONNX Runtime
inference next to them when onnxruntime is installed.

    python benchmarks/compile.py [--config configs/shapes_atss.py] [--size 320] [--batch 4]
        [--train-batch 4] [--mode default] [--repeats 15] [--device cpu] [--checkpoint PTH]
        [--skip-train] [--skip-onnx]

Inference is timed for ``maybe_compile(model, mode)`` and for ``maybe_compile(model, mode,
freeze=True)`` (inductor's freezing: BatchNorm folded into the convolutions, weights prepacked;
inference only). The training step is ``loss = sum(model.loss(batch)[loss_*])``, ``backward`` and
an SGD step on a fixed batch with 4 random GT boxes per image; compiled, the network forward and
backward run compiled while label assignment and the loss pipeline stay eager.

The model is the config's detector with ``--checkpoint``'s weights, or its initial weights with
BatchNorm statistics from one pass over the benchmark batch (freshly initialised eval-mode
BatchNorm shrinks activations towards denormal floats, slow on x86 CPUs, which would distort the
comparison). All variants hold the same weights and are timed alternately (one run each, in turn)
so that load drifts hit all of them; the best of ``--repeats`` runs is reported (on a shared
machine, the least disturbed one) with the ratio of medians beside it, after a warm-up call whose
time (the compilation, for compiled variants) is reported separately. Ratios are other / eager
(< 1: faster than eager).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detkit.config import instantiate, load_config  # noqa: E402
from detkit.engine.compile import is_compiled, maybe_compile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "shapes_atss.py"))
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--batch", type=int, default=4, help="inference batch")
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--mode", default="default", help="torch.compile mode")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--checkpoint", default=None, help="weights to load (default: initial weights)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-onnx", action="store_true")
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Timing = tuple[float, float]  # (best, median) seconds


def alternate(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict[str, Timing]:
    """(best, median) seconds per function, running them in turn ``repeats`` times (after one warm-up each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def first_call(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def calibrate_batchnorm(model: torch.nn.Module, images: torch.Tensor) -> None:
    """BatchNorm running statistics from one training-mode pass over ``images``."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(images)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.03


def training_batch(b: int, size: int, num_classes: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(b, 4, 2, generator=g) * size * 0.7
    wh = torch.rand(b, 4, 2, generator=g) * size * 0.25 + 8
    return {
        "images": torch.rand(b, 3, size, size, generator=g).to(device),
        "gt_boxes": torch.cat([xy, (xy + wh).clamp(max=size)], -1).to(device),
        "gt_labels": torch.randint(0, num_classes, (b, 4), generator=g).to(device),
        "gt_mask": torch.ones(b, 4, dtype=torch.bool, device=device),
        "ignore_boxes": torch.zeros(b, 1, 4, device=device),
        "ignore_mask": torch.zeros(b, 1, dtype=torch.bool, device=device),
    }


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict) -> Callable[[], float]:
    def step() -> float:
        losses = model.loss(batch)
        loss = sum(v for k, v in losses.items() if k.startswith("loss"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())
    return step


def onnx_runner(model: torch.nn.Module, cfg, size: int, batch: int) -> tuple[Callable[[], object], str] | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    from detkit.deploy import OnnxDetector, build_metadata, export_onnx, letterbox_from_config

    path = Path(tempfile.mkdtemp()) / "bench.onnx"
    meta = build_metadata(model, letterbox_from_config(cfg, model.size_divisor, size), None, dynamic_batch=True)
    export_onnx(copy.deepcopy(model).cpu(), path, meta)
    runtime = OnnxDetector(path, threads=torch.get_num_threads(),
                           session_config={"session.intra_op.allow_spinning": "0"})  # no spinning into torch's turn
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    import onnxruntime as ort
    return (lambda: runtime.run(images)), ort.__version__


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    cfg = load_config(args.config)
    torch.manual_seed(0)
    eager = instantiate(cfg.model).to(device)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(device)
    if args.checkpoint:
        from detkit.engine.weights import load_weights

        load_weights(eager, args.checkpoint)
    else:
        calibrate_batchnorm(eager, images)
    eager.eval()
    # Same weights; copied before compiling (a copy of a compiled module runs eagerly).
    compiled, frozen = copy.deepcopy(eager), copy.deepcopy(eager)
    maybe_compile(compiled, args.mode)
    maybe_compile(frozen, args.mode, freeze=True)
    if not is_compiled(compiled):
        print("torch.compile is unavailable here (see the warning above); nothing to compare")
        return 1
    print(f"## torch.compile ({args.mode!r}) vs eager: {Path(args.config).name}, {args.size} px, {device.type}, "
          f"{torch.get_num_threads()} threads")
    print(f"torch {torch.__version__}, python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, best and median of {args.repeats} alternated runs\n")

    rows: list[tuple[str, Timing, Timing, float]] = []  # (what, eager, other, first call s)
    batch = {"images": images}
    runner = onnx_runner(eager, cfg, args.size, args.batch) if not args.skip_onnx and device.type == "cpu" else None
    b = args.batch
    with torch.no_grad():
        first = {"compiled": first_call(lambda: compiled(images), device),
                 "frozen": first_call(lambda: frozen(images), device)}
        ref = eager(images)
        diffs = {k: max(float((r - o).abs().max()) for r, o in zip(ref, m(images)))
                 for k, m in (("compiled", compiled), ("frozen", frozen))}
        scale = max(float(r.abs().max()) for r in ref)
        fns = {"eager": lambda: eager(images), "compiled": lambda: compiled(images), "frozen": lambda: frozen(images)}
        if runner is not None:
            fns["ort"] = runner[0]
        t = alternate(fns, device, args.repeats)
        rows.append((f"inference forward, batch {b}: compile", t["eager"], t["compiled"], first["compiled"]))
        rows.append((f"inference forward, batch {b}: compile, freeze=True", t["eager"], t["frozen"], first["frozen"]))
        if runner is not None:
            rows.append((f"inference forward + decode, batch {b}: ONNX Runtime {runner[1]} (no NMS in the graph)",
                         t["eager"], t["ort"], float("nan")))
        t = alternate({"eager": lambda: eager.predict(batch), "compiled": lambda: compiled.predict(batch),
                       "frozen": lambda: frozen.predict(batch)}, device, args.repeats)
        rows.append((f"forward + post-processing (predict), batch {b}: compile", t["eager"], t["compiled"],
                     float("nan")))
        rows.append((f"forward + post-processing (predict), batch {b}: compile, freeze=True", t["eager"], t["frozen"],
                     float("nan")))
    if not args.skip_train:
        eager.train()
        compiled.train()
        tb = training_batch(args.train_batch, args.size, int(eager.head.num_classes), device)
        opt_e = torch.optim.SGD(eager.parameters(), lr=1e-4, momentum=0.9)
        opt_c = torch.optim.SGD(compiled.parameters(), lr=1e-4, momentum=0.9)
        step_e, step_c = train_step(eager, opt_e, tb), train_step(compiled, opt_c, tb)
        first_train = first_call(step_c, device)
        t = alternate({"eager": step_e, "compiled": step_c}, device, max(5, args.repeats // 2))
        rows.append((f"training step (model.loss + backward + SGD), batch {args.train_batch}: compile", t["eager"],
                     t["compiled"], first_train))

    print("| what | eager (ms) | other (ms) | other / eager | ratio of medians | first call (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for what, e, c, first_s in rows:
        first_txt = "" if first_s != first_s else f"{first_s:.1f}"
        print(f"| {what} | {e[0] * 1e3:.1f} | {c[0] * 1e3:.1f} | **{c[0] / e[0]:.2f}x** | {c[1] / e[1]:.2f}x "
              f"| {first_txt} |")
    print(f"\nBest of {args.repeats} alternated runs ({max(5, args.repeats // 2)} for the training step); "
          "'first call' is the compiling call. ONNX Runtime: CPU, same thread count, no thread spinning.")
    print(f"max |compiled - eager| of the raw maps: {diffs['compiled']:.2e}, frozen: {diffs['frozen']:.2e} "
          f"(largest |value| {scale:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
