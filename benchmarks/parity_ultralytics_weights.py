"""Converted Ultralytics YOLOv8, YOLO11 and YOLO26 checkpoints against Ultralytics' own inference, box for box.

    .venv-bench/bin/python benchmarks/parity_ultralytics_weights.py [--families yolov8 yolo11 yolo26]
        [--scales n s] [--classes 80 3] [--no-counts]

For each family, scale and class count: a randomly initialised Ultralytics ``{family}{scale}.yaml``
``DetectionModel`` gets random BatchNorm affine parameters, BatchNorm statistics measured on random
images and prediction convs scaled to unit output spread (:func:`calibrate`: so the outputs depend on
the image rather than only on the position, and scores do not tie by the hundred), and random
prediction biases (so scores spread over 0..1 rather than sitting near the init's 1e-4); YOLO26's
one-to-one branch, a copy of the one-to-many one at init, is perturbed so the two differ. It is saved as
Ultralytics' trainer saves ``last.pt`` (``{"model": None, "ema": fp16 model, ...}``) and then
stripped by Ultralytics' own ``strip_optimizer`` into the released form (``{"model": fp16 model,
"ema": None}``). Each file goes through ``tools/convert_weights.py ultralytics`` (run as a user runs
it: the family, scale, config and overrides are the ones it picks and records) and the result is
loaded into that config with ``load_weights(strict=True)``. On the same images (2 x 3 x 640 x 640 and
2 x 3 x 384 x 640, uniform 0..1), Ultralytics' model as its loader returns it (``load_checkpoint``:
fp32, eval; also fused, as its predictor / validator run it) gives ``(B, 4 + C, N)`` boxes and class
probabilities, and detkit's ``Detector.forward_decoded`` ``(B, N, 4)`` xyxy and ``(B, N, C)``, priors
in the same order (level by level, row-major). Pass: boxes within 0.05 px and scores within 1e-3.

YOLO26 is compared branch by branch: its one-to-many branch (what Ultralytics 8.4.190 runs by default,
``nms=None``, then NMS) and its one-to-one branch (Ultralytics' end-to-end mode, ``nms=False``:
``Detect.end2end = True``; fused, the one-to-many branch is removed). For the one-to-one branch detkit's
NMS-free detections (``Detector.predict`` with the config's settings, ``score_thr=0``, top 300) are
compared rank by rank with Ultralytics' end-to-end output ``(B, 300, 6)`` (its ``Detect.postprocess``
top-300 selection): the number of ranks whose class differs or whose box is more than 0.05 px away
("disagreements"; 0 to pass), and the largest box and score differences.

Also prints every scale's parameter count on both sides (detkit's configs: Ultralytics' less the 16
fixed DFL projection weights for YOLOv8 and YOLO11; YOLO26 has none). ultralytics is installed only in
the benchmark venv (``make bench-setup``); exit status 2 without it, 1 when a check fails.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from parity_common import ROOT, table_header
from parity_yolov8_arch import randomise_batchnorm
from torch import nn

from detkit.boxes import cxcywh_to_xyxy
from detkit.config import instantiate, load_config
from detkit.engine.weights import load_weights
from detkit.models.convert.ultralytics import ultralytics_config

os.environ.setdefault("YOLO_VERBOSE", "False")  # Ultralytics' per-load summaries would bury the tables

SCALES = ("n", "s", "m", "l", "x")
FAMILIES = {"yolov8": "YOLOv8", "yolo11": "YOLO11", "yolo26": "YOLO26"}
DFL_WEIGHTS = {"yolov8": 16, "yolo11": 16, "yolo26": 0}  # Ultralytics' fixed DFL projection, a constant in detkit
BOX_TOL = 0.05  # px
SCORE_TOL = 1e-3
MAX_DET = 300
SIZES = ((640, 640), (384, 640))  # (H, W): square and not, so a row/column mix-up shows


def random_ultralytics_model(family: str, scale: str, num_classes: int, seed: int) -> nn.Module:
    """``{family}{scale}.yaml`` with random BN affine parameters, BN statistics measured on random images,
    prediction convs scaled to unit output spread and random prediction biases (see :func:`calibrate`)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(f"{family}{scale}.yaml", nc=num_classes, verbose=False)
    randomise_batchnorm(model, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    detect = model.model[-1]
    with torch.no_grad():
        if getattr(detect, "one2one_cv2", None) is not None:  # YOLO26: a deep copy at init; make it differ
            for copy_ in [*detect.one2one_cv2.parameters(), *detect.one2one_cv3.parameters()]:
                copy_.add_(torch.randn(copy_.shape, generator=g) * 0.05 * (copy_.std() if copy_.numel() > 1 else 1))
    calibrate(model, seed + 3)
    with torch.no_grad():
        for pred in prediction_convs(detect):
            pred.bias.copy_(torch.randn(pred.bias.shape, generator=g))
    model.names = {i: f"class_{i}" for i in range(num_classes)}
    model.args = get_cfg()  # as the trainer attaches its arguments
    return model


def prediction_convs(detect: nn.Module) -> list[nn.Conv2d]:
    """The last 1x1 conv of every box and class branch of a Detect head (one-to-one copies included)."""
    names = ("cv2", "cv3", "one2one_cv2", "one2one_cv3")
    return [branch[-1] for name in names for branch in (getattr(detect, name, None) or [])]


def calibrate(model: nn.Module, seed: int) -> None:
    """Make the random model's outputs depend on the image, as a trained model's do.

    With PyTorch's default conv init and arbitrary BN statistics the signal fades layer by layer: the
    head's outputs then hardly vary but at the borders, and scores tie in the hundreds, which would leave
    the top-300 comparison nothing to tell apart. So each BatchNorm's running statistics are set to
    those of its input on a batch of random images (one training-mode pass with momentum 1), and each
    prediction conv's output channels are scaled to unit spread over that batch."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    images = torch.rand(2, 3, 640, 640, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for m in bns:
            m.momentum = 1.0
        model.train()
        model(images)
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.eval()
        spread: dict[nn.Module, torch.Tensor] = {}
        preds = prediction_convs(model.model[-1])
        hooks = [p.register_forward_hook(lambda m, _, out: spread.__setitem__(m, out.transpose(0, 1).flatten(1).std(1)))
                 for p in preds]
        model(images)
        for hook in hooks:
            hook.remove()
        for pred in preds:  # (C_out,) -> (C_out, 1, 1, 1)
            pred.weight.div_(spread[pred].clamp_min(1e-6).view(-1, 1, 1, 1))


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


def ultralytics_model(path: Path, fuse: bool, end2end: bool = False) -> nn.Module:
    """The checkpoint as Ultralytics' loader returns it (fp32, eval), its end-to-end mode set before fusing
    (``end2end``: the one-to-one branch, as ``nms=False`` selects it; fusing then drops the other branch)."""
    from ultralytics.nn.tasks import load_checkpoint

    model = load_checkpoint(str(path), fuse=False)[0]
    if end2end:
        model.model[-1].end2end = True
    return model.fuse(verbose=False) if fuse else model


def ultralytics_outputs(model: nn.Module,
                        images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Ultralytics' own eval output: dense boxes ``(B, N, 4)`` xyxy and scores ``(B, N, C)`` of the branch
    the model runs, and in end-to-end mode its ``(B, 300, 6)`` detections (else None)."""
    detect = model.model[-1]
    with torch.no_grad():
        out, raw = model(images)
        if getattr(detect, "end2end", False):  # out is the top-300 selection; decode the branch densely too
            dense = detect._inference(raw["one2one"]).transpose(1, 2)  # (B, 4 + C, N) xyxy -> (B, N, 4 + C)
            return dense[..., :4], dense[..., 4:], out
    pred = out.transpose(1, 2)  # (B, 4 + C, N) xywh -> (B, N, 4 + C)
    return cxcywh_to_xyxy(pred[..., :4]), pred[..., 4:], None


def top_k_disagreements(dets: list[dict[str, torch.Tensor]], reference: torch.Tensor) -> tuple[int, int, float, float]:
    """detkit's NMS-free detections vs Ultralytics' ``(B, 300, 6)`` end-to-end output.

    Detections are matched one to one (same class, box within BOX_TOL, score within SCORE_TOL), in rank
    order, since exactly tied scores may come in either order. Returns (detections of either side left
    unmatched, not counting those tied with the last kept score, where either may be kept; those, at the
    cut; the largest score difference rank by rank; the largest box difference of a matched pair).
    """
    bad, at_cut, score_diff, box_diff = 0, 0, 0.0, 0.0
    for det, ref in zip(dets, reference):
        if len(det["scores"]) != len(ref):
            bad += abs(len(det["scores"]) - len(ref))
            continue
        score_diff = max(score_diff, float((det["scores"] - ref[:, 4]).abs().max()))
        boxes = (det["boxes"][:, None] - ref[None, :, :4]).abs().amax(dim=2)  # (K, 4), (R, 4) -> (K, R)
        fits = ((det["labels"][:, None] == ref[None, :, 5].long()) & (boxes <= BOX_TOL)
                & ((det["scores"][:, None] - ref[None, :, 4]).abs() <= SCORE_TOL))
        free = torch.ones(len(ref), dtype=torch.bool)
        unmatched = []
        for i in range(len(det["scores"])):
            options = torch.nonzero(fits[i] & free).flatten()
            if options.numel():
                free[options[0]] = False
                box_diff = max(box_diff, float(boxes[i, options[0]]))
            else:
                unmatched.append(float(det["scores"][i]))
        last = float(ref[-1, 4])
        left = unmatched + ref[free, 4].tolist()
        cut = sum(abs(score - last) <= 1e-6 for score in left)
        at_cut += cut
        bad += len(left) - cut
    return bad, at_cut, score_diff, box_diff


def convert_like_a_user(path: Path, folder: Path) -> tuple[Path, dict] | str:
    """``tools/convert_weights.py ultralytics path`` in a subprocess: (written file, its meta), or why it failed."""
    dst = folder / f"{path.stem}_detkit.pth"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_weights.py"), "ultralytics", str(path),
                          str(dst)], capture_output=True, text=True)
    if run.returncode != 0:
        return f"conversion failed (exit {run.returncode}: {run.stderr.strip()[-300:]})"
    return dst, torch.load(dst, map_location="cpu", weights_only=True)["meta"]


def _diff(ours: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    if ours[0].shape != ref[0].shape or ours[1].shape != ref[1].shape:
        return float("inf"), float("inf")
    return float((ours[0] - ref[0]).abs().max()), float((ours[1] - ref[1]).abs().max())


def check(family: str, scale: str, num_classes: int, folder: Path) -> bool:
    name = f"{FAMILIES[family]}{scale}"
    ref = random_ultralytics_model(family, scale, num_classes, seed=0)
    files = save_like_ultralytics(ref, folder)
    end2end = family == "yolo26"
    ok = True
    for entry, path in files.items():
        converted = convert_like_a_user(path, folder)
        if isinstance(converted, str):
            print(f"| {name} | {num_classes} | {entry} | | | {converted} | | | FAIL |")
            ok = False
            continue
        dst, meta = converted
        model = instantiate(load_config(ROOT / meta["config"], meta["cfg_options"]).model)
        load_weights(model, dst, strict=True)
        model.eval()
        branches = ["one2many", "one2one"] if end2end else ["one2many"]
        refs = {(branch, fuse): ultralytics_model(path, fuse, end2end=branch == "one2one")
                for branch in branches for fuse in (False, True)}
        for h, w in SIZES:
            images = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h + w))
            for branch in branches:
                model.head.branch = branch
                with torch.no_grad():
                    ours = model.forward_decoded(images)
                    dets = model.predict({"images": images}, score_thr=0.0) if branch == "one2one" else None
                diffs, top = [], "-"
                for fuse in (False, True):
                    boxes, scores, selected = ultralytics_outputs(refs[(branch, fuse)], images)
                    diffs.append(_diff(ours, (boxes, scores)))
                    if dets is not None and selected is not None:
                        bad, at_cut, score_d, box_d = top_k_disagreements(dets, selected)
                        diffs.append((box_d, score_d))
                        ok &= bad == 0
                        top = (f"{bad} ({at_cut} tied at the cut) / {box_d:.1e} / {score_d:.1e}" if not fuse
                               else top + f"; fused: {bad} ({at_cut})")
                passed = all(b <= BOX_TOL and sc <= SCORE_TOL for b, sc in diffs)
                ok &= passed
                label = branch if end2end else "-"
                print(f"| {name} | {num_classes} | {entry} | {h}x{w}, N={ours[0].shape[1]:,} | {label} "
                      f"| {diffs[0][0]:.1e} / {diffs[0][1]:.1e} | {diffs[-1 if dets is None else 2][0]:.1e} / "
                      f"{diffs[-1 if dets is None else 2][1]:.1e} | {top} "
                      f"| {float(ours[1].min()):.3f}..{float(ours[1].max()):.3f} | {'ok' if passed else 'FAIL'} |",
                      flush=True)
        model.head.branch = branches[-1]
    return ok


def parameter_counts(families: list[str]) -> bool:
    from ultralytics.nn.tasks import DetectionModel

    print(table_header("model", "Ultralytics params", "detkit config", "detkit params", "difference"))
    ok = True
    for family in families:
        for scale in SCALES:
            ref = sum(p.numel() for p in DetectionModel(f"{family}{scale}.yaml", nc=80, verbose=False).parameters())
            config = ultralytics_config(family, scale)
            ours = sum(p.numel() for p in instantiate(load_config(ROOT / config).model).parameters())
            ok &= ref - ours == DFL_WEIGHTS[family]
            why = "DFL projection" if DFL_WEIGHTS[family] else "no DFL (reg_max=1)"
            print(f"| {FAMILIES[family]}{scale} | {ref:,} | {config} | {ours:,} | {ref - ours} ({why}) |", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--scales", nargs="+", default=["n", "s"], choices=SCALES)
    parser.add_argument("--classes", nargs="+", type=int, default=[80, 3], help="class counts to convert")
    parser.add_argument("--no-counts", action="store_true", help="skip the parameter-count table")
    args = parser.parse_args()
    try:
        import ultralytics
    except ImportError:
        print("error: ultralytics is not installed; run this from .venv-bench (make bench-setup)", file=sys.stderr)
        return 2
    print(f"# Ultralytics checkpoints converted by tools/convert_weights.py vs Ultralytics' inference; "
          f"ultralytics {ultralytics.__version__}, torch {torch.__version__}, CPU fp32 (weights saved fp16)")
    ok = True if args.no_counts else parameter_counts(args.families)
    print()
    print(table_header("model", "classes", "checkpoint entry", "input (H x W), priors", "branch",
                       "max box px / score diff vs Ultralytics", "same, Ultralytics fused",
                       "top-300 disagreements (swaps tied at the cut) / max box px / score diff vs Ultralytics' "
                       "end-to-end output", "detkit score range", "result"))
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            for scale in args.scales:
                for num_classes in args.classes:
                    folder = Path(tmp) / f"{family}_{scale}_{num_classes}"
                    folder.mkdir()
                    ok &= check(family, scale, num_classes, folder)
    print(f"\n{'PASS' if ok else 'FAIL'}: boxes within {BOX_TOL} px and scores within {SCORE_TOL} of Ultralytics' "
          "own output, YOLO26's NMS-free top 300 equal to Ultralytics' end-to-end selection, parameter counts "
          "Ultralytics' less its fixed DFL projection")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
