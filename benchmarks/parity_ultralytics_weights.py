"""Converted Ultralytics YOLOv8 checkpoints against Ultralytics' own inference, box for box.

    .venv-bench/bin/python benchmarks/parity_ultralytics_weights.py [--scales n s] [--classes 80 3]

For each scale and class count: a randomly initialised Ultralytics ``yolov8{scale}.yaml``
``DetectionModel`` gets random BatchNorm statistics and affine parameters and random prediction
biases (so scores spread over 0..1 rather than sitting near the init's 1e-4); it is saved as
Ultralytics' trainer saves ``last.pt`` (``{"model": None, "ema": fp16 model, ...}``) and then
stripped by Ultralytics' own ``strip_optimizer`` into the released form (``{"model": fp16 model,
"ema": None}``). Each file goes through ``tools/convert_weights.py ultralytics`` (run as a user runs
it) and the result is loaded into ``configs/yolov8{scale}_tal.py`` with
``load_weights(strict=True)``. On the same images (2 x 3 x 640 x 640 and 2 x 3 x 384 x 640, uniform
0..1), Ultralytics' model as its loader returns it (``load_checkpoint``: fp32, eval; also fused, as
its predictor / validator run it) gives ``(B, 4 + C, N)`` xywh boxes and class probabilities, and
detkit's ``Detector.forward_decoded`` ``(B, N, 4)`` xyxy and ``(B, N, C)``, priors in the same order
(level by level, row-major). Pass: boxes within 0.05 px and scores within 1e-3 of both.

Also prints every scale's parameter count on both sides (detkit's configs: Ultralytics' less the 16
fixed DFL projection weights). ultralytics is installed only in the benchmark venv
(``make bench-setup``); exit status 2 without it, 1 when a check fails.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_VERBOSE", "False")  # Ultralytics' per-load summaries would bury the tables

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(ROOT / "benchmarks"))  # the helpers beside this file

import torch  # noqa: E402
from parity_yolov8_arch import randomise_batchnorm  # noqa: E402
from torch import nn  # noqa: E402

from detkit.boxes import cxcywh_to_xyxy  # noqa: E402
from detkit.config import instantiate, load_config  # noqa: E402
from detkit.engine.weights import load_weights  # noqa: E402

SCALES = ("n", "s", "m", "l", "x")
BOX_TOL = 0.05  # px
SCORE_TOL = 1e-3
SIZES = ((640, 640), (384, 640))  # (H, W): square and not, so a row/column mix-up shows


def random_ultralytics_model(scale: str, num_classes: int, seed: int) -> nn.Module:
    """``yolov8{scale}.yaml`` with random BN statistics / affine parameters and prediction biases."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(f"yolov8{scale}.yaml", nc=num_classes, verbose=False)
    randomise_batchnorm(model, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        detect = model.model[-1]
        for branch in (*detect.cv2, *detect.cv3):
            pred = branch[-1]
            pred.bias.copy_(torch.randn(pred.bias.shape, generator=g))
    model.names = {i: f"class_{i}" for i in range(num_classes)}
    model.args = get_cfg()  # as the trainer attaches its arguments
    return model


def save_like_ultralytics(model: nn.Module, folder: Path) -> dict[str, Path]:
    """``last.pt`` as the trainer writes it (fp16 EMA, ``model`` None) and ``best.pt`` as
    ``strip_optimizer`` releases it (fp16 ``model``, ``ema`` None)."""
    from ultralytics import __version__
    from ultralytics.utils.torch_utils import strip_optimizer

    last, best = folder / "last.pt", folder / "best.pt"
    torch.save({"epoch": 0, "best_fitness": None, "model": None, "ema": copy.deepcopy(model).half(),
                "updates": 0, "optimizer": None, "train_args": dict(vars(model.args)), "version": __version__},
               last)
    strip_optimizer(last, best)
    return {"ema (last.pt)": last, "model (stripped)": best}


def ultralytics_models(path: Path) -> list[nn.Module]:
    """The checkpoint as Ultralytics' loader returns it (fp32, eval): as it is, and fused."""
    from ultralytics.nn.tasks import load_checkpoint

    return [load_checkpoint(str(path), fuse=fuse)[0] for fuse in (False, True)]


def ultralytics_outputs(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ultralytics' own eval output on ``images``: boxes ``(B, N, 4)`` xyxy, scores ``(B, N, C)``."""
    with torch.no_grad():
        out = model(images)
    pred = out[0] if isinstance(out, (tuple, list)) else out  # (B, 4 + C, N)
    pred = pred.transpose(1, 2)  # (B, 4 + C, N) -> (B, N, 4 + C)
    return cxcywh_to_xyxy(pred[..., :4]), pred[..., 4:]


def check(scale: str, num_classes: int, folder: Path) -> bool:
    ref = random_ultralytics_model(scale, num_classes, seed=0)
    files = save_like_ultralytics(ref, folder)
    ok = True
    for entry, path in files.items():
        dst = folder / f"{path.stem}_detkit.pth"
        run = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_weights.py"), "ultralytics", str(path),
                              str(dst)], capture_output=True, text=True)
        if run.returncode != 0:
            print(f"| YOLOv8{scale} | {num_classes} | {entry} | conversion failed (exit {run.returncode}: "
                  f"{run.stderr.strip()[-300:]}) | | | | FAIL |")
            ok = False
            continue
        options = [f"model.head.num_classes={num_classes}"] if num_classes != 80 else []
        model = instantiate(load_config(ROOT / f"configs/yolov8{scale}_tal.py", options).model)
        load_weights(model, dst, strict=True)
        model.eval()
        references = ultralytics_models(path)
        for h, w in SIZES:
            images = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h + w))
            with torch.no_grad():
                boxes, scores = model.forward_decoded(images)
            diffs = []
            for reference in references:
                ref_boxes, ref_scores = ultralytics_outputs(reference, images)
                if ref_boxes.shape != boxes.shape or ref_scores.shape != scores.shape:
                    diffs.append((float("inf"), float("inf")))
                    continue
                diffs.append((float((boxes - ref_boxes).abs().max()), float((scores - ref_scores).abs().max())))
            passed = all(b <= BOX_TOL and s <= SCORE_TOL for b, s in diffs)
            ok &= passed
            print(f"| YOLOv8{scale} | {num_classes} | {entry} | {h}x{w}, N={boxes.shape[1]:,} "
                  f"| {diffs[0][0]:.1e} / {diffs[0][1]:.1e} | {diffs[1][0]:.1e} / {diffs[1][1]:.1e} "
                  f"| {float(scores.min()):.3f}..{float(scores.max()):.3f} | {'ok' if passed else 'FAIL'} |",
                  flush=True)
    return ok


def parameter_counts() -> bool:
    from ultralytics.nn.tasks import DetectionModel

    print("| model | Ultralytics params | detkit config | detkit params | difference |")
    print("|---|---|---|---|---|")
    ok = True
    for scale in SCALES:
        ref = sum(p.numel() for p in DetectionModel(f"yolov8{scale}.yaml", nc=80, verbose=False).parameters())
        config = f"configs/yolov8{scale}_tal.py"
        ours = sum(p.numel() for p in instantiate(load_config(ROOT / config).model).parameters())
        ok &= ref - ours == 16
        print(f"| YOLOv8{scale} | {ref:,} | {config} | {ours:,} | {ref - ours} (DFL projection) |", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="+", default=["n", "s"], choices=SCALES)
    parser.add_argument("--classes", nargs="+", type=int, default=[80, 3], help="class counts to convert")
    args = parser.parse_args()
    try:
        import ultralytics
    except ImportError:
        print("error: ultralytics is not installed; run this from .venv-bench (make bench-setup)", file=sys.stderr)
        return 2
    print(f"# Ultralytics YOLOv8 checkpoints converted by tools/convert_weights.py vs Ultralytics' inference; "
          f"ultralytics {ultralytics.__version__}, torch {torch.__version__}, CPU fp32 (weights saved fp16)")
    ok = parameter_counts()
    print()
    print("| model | classes | checkpoint entry | input (H x W), priors | max box px / score diff vs "
          "Ultralytics | same, Ultralytics fused | detkit score range | result |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            for num_classes in args.classes:
                folder = Path(tmp) / f"{scale}_{num_classes}"
                folder.mkdir()
                ok &= check(scale, num_classes, folder)
    print(f"\n{'PASS' if ok else 'FAIL'}: boxes within {BOX_TOL} px and scores within {SCORE_TOL} of Ultralytics' "
          "own output, parameter counts Ultralytics' less 16")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
