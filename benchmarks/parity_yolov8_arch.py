"""detkit's YOLOv8 / YOLOX backbone + neck against Ultralytics' and YOLOX's own, weight for weight.

    .venv-bench/bin/python benchmarks/parity_yolov8_arch.py [--scales n s m] [--size 640]

For each YOLOv8 scale: a randomly initialised Ultralytics ``yolov8{scale}.yaml`` model (80 classes)
gets random BatchNorm statistics and affine parameters (so ``eps`` and the BN mapping matter), its
layers 0-21 are copied into ``CSPDarknet(arch="yolov8")`` + ``CSPPAN(layout="yolov8")`` through the
layer map below (strict ``load_state_dict``: every tensor used, none missing), and the three neck
outputs (Ultralytics' layers 15, 18, 21) are compared in eval mode on the same input. When the
``yolox`` package is installed, YOLOX-s's ``YOLOPAFPN`` (built by YOLOX's own ``Exp.get_model``,
which sets BatchNorm ``eps=1e-3``) is checked the same way against
``CSPDarknet(arch="yolox")`` + ``CSPPAN(layout="yolox")``. Parameter counts are printed on both
sides.

Ultralytics and yolox are installed only in the benchmark venv (``make bench-setup``), never as
detkit dependencies; exit status 2 when ultralytics is missing, 1 when a check fails.
"""

from __future__ import annotations

import argparse
import re
import sys

import torch
from parity_common import table_header
from torch import nn

from detkit.models.backbones import CSPDarknet
from detkit.models.convert.ultralytics import ultralytics_to_detkit_key
from detkit.models.necks import CSPPAN

YOLOV8_NECK_OUTPUTS = (15, 18, 21)
YOLOV8_NUM_BLOCKS = {"n": 1, "s": 1, "m": 2, "l": 3, "x": 3}

# YOLOX's YOLOPAFPN module path prefix -> detkit module path.
YOLOX_MODULES: dict[str, str] = {
    "backbone.stem": "backbone.stem",
    "backbone.dark2.0": "backbone.stages.1.0", "backbone.dark2.1": "backbone.stages.1.1",
    "backbone.dark3.0": "backbone.stages.2.0", "backbone.dark3.1": "backbone.stages.2.1",
    "backbone.dark4.0": "backbone.stages.3.0", "backbone.dark4.1": "backbone.stages.3.1",
    "backbone.dark5.0": "backbone.stages.4.0", "backbone.dark5.1": "backbone.stages.4.1",
    "backbone.dark5.2": "backbone.stages.4.2",
    "lateral_conv0": "neck.reduce.0", "C3_p4": "neck.td_blocks.0",
    "reduce_conv1": "neck.reduce.1", "C3_p3": "neck.td_blocks.1",
    "bu_conv2": "neck.down.0", "C3_n3": "neck.bu_blocks.0",
    "bu_conv1": "neck.down.1", "C3_n4": "neck.bu_blocks.1",
}


def rename_yolox_key(key: str) -> str:
    """YOLOPAFPN key -> detkit path; CSPLayer / SPPBottleneck ``conv{j}`` -> ``cv{j}``,
    ``m.{k}`` -> ``blocks.{k}`` (the bottlenecks keep ``conv1`` / ``conv2``)."""
    for prefix, path in YOLOX_MODULES.items():
        if key.startswith(prefix + "."):
            rest = re.sub(r"^conv(\d)\.", r"cv\1.", key[len(prefix) + 1:])  # BaseConv: conv.*
            rest = re.sub(r"^m\.(\d+)\.", r"blocks.\1.", rest)
            return f"{path}.{rest}"
    raise KeyError(f"no detkit module for YOLOX key {key!r}")


def randomise_batchnorm(model: nn.Module, seed: int) -> None:
    """Random BN affine parameters and running statistics (fresh models have 1, 0, 0, 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[list[float], list[float]]:
    diffs = [float((x - y).abs().max()) for x, y in zip(a, b)]
    scales = [float(y.abs().max()) for y in b]
    return diffs, scales


def check_yolov8(scale: str, x: torch.Tensor, tol: float) -> bool:
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    ref = DetectionModel(f"yolov8{scale}.yaml", nc=80, verbose=False).eval()
    randomise_batchnorm(ref, seed=1)
    backbone = CSPDarknet("yolov8", scale=scale)
    ours = nn.ModuleDict(dict(
        backbone=backbone,
        neck=CSPPAN(backbone.out_channels, layout="yolov8", num_blocks=YOLOV8_NUM_BLOCKS[scale]),
    )).eval()
    state = {ultralytics_to_detkit_key(k): v for k, v in ref.state_dict().items()
             if int(k.split(".")[1]) < 22}
    ours.load_state_dict(state, strict=True)  # raises on any missing or unused tensor

    captured: dict[int, torch.Tensor] = {}
    hooks = [ref.model[i].register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(i, out))
             for i in YOLOV8_NECK_OUTPUTS]
    with torch.no_grad():
        ref(x)
        got = ours["neck"](ours["backbone"](x))
    for h in hooks:
        h.remove()
    expected = [captured[i] for i in YOLOV8_NECK_OUTPUTS]
    diffs, scales = max_abs_diff(got, expected)
    ref_bb = sum(count(ref.model[i]) for i in range(10))
    ref_neck = sum(count(ref.model[i]) for i in range(10, 22))
    ok = max(diffs) <= tol and [tuple(t.shape) for t in got] == [tuple(t.shape) for t in expected]
    print(f"| YOLOv8{scale} | {ref_bb:,} / {count(backbone):,} | {ref_neck:,} / "
          f"{count(ours['neck']):,} | {' '.join(f'{d:.1e}' for d in diffs)} | "
          f"{' '.join(f'{s:.1f}' for s in scales)} | {'ok' if ok else 'FAIL'} |", flush=True)
    return ok and ref_bb == count(backbone) and ref_neck == count(ours["neck"])


def check_yolox_s(x: torch.Tensor, tol: float) -> bool | None:
    try:
        from yolox.exp import get_exp
    except ImportError:
        print("| YOLOX-s | (yolox not installed: skipped) | | | | |")
        return None
    torch.manual_seed(0)
    model = get_exp(exp_name="yolox-s").get_model().eval()  # BN eps 1e-3 as YOLOX trains it
    ref, head_params = model.backbone, count(model.head)
    randomise_batchnorm(ref, seed=1)
    backbone = CSPDarknet("yolox", scale="s")
    neck = CSPPAN(backbone.out_channels, layout="yolox")
    ours = nn.ModuleDict(dict(backbone=backbone, neck=neck)).eval()
    ours.load_state_dict({rename_yolox_key(k): v for k, v in ref.state_dict().items()}, strict=True)
    with torch.no_grad():
        expected = list(ref(x))
        got = ours["neck"](ours["backbone"](x))
    diffs, scales = max_abs_diff(got, expected)
    ref_bb = count(ref.backbone)
    ref_neck = count(ref) - ref_bb
    ok = max(diffs) <= tol
    print(f"| YOLOX-s | {ref_bb:,} / {count(backbone):,} | {ref_neck:,} / {count(neck):,} | "
          f"{' '.join(f'{d:.1e}' for d in diffs)} | {' '.join(f'{s:.1f}' for s in scales)} | "
          f"{'ok' if ok else 'FAIL'} |", flush=True)
    print(f"(YOLOX-s head, 80 classes: {head_params:,} parameters; whole model "
          f"{ref_bb + ref_neck + head_params:,})")
    return ok and ref_bb == count(backbone) and ref_neck == count(ours["neck"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="+", default=["n", "s", "m"],
                        choices=sorted(YOLOV8_NUM_BLOCKS))
    parser.add_argument("--size", type=int, default=640, help="square input size (multiple of 32)")
    parser.add_argument("--tol", type=float, default=1e-4, help="max abs difference accepted")
    args = parser.parse_args()
    try:
        import ultralytics
    except ImportError:
        print("error: ultralytics is not installed; run this from .venv-bench (make bench-setup)",
              file=sys.stderr)
        return 2
    torch.manual_seed(0)
    x = torch.rand(1, 3, args.size, args.size)
    print(f"# backbone + neck parity, eval mode, input 1x3x{args.size}x{args.size} uniform 0..1, "
          f"ultralytics {ultralytics.__version__}, torch {torch.__version__}")
    print(table_header("model", "backbone params (ref / detkit)", "neck params (ref / detkit)",
                       "max abs diff per level (P3 P4 P5)", "max abs output", "result"))
    results = [check_yolov8(s, x, args.tol) for s in args.scales]
    results.append(check_yolox_s(x, args.tol))
    return 0 if all(r is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
