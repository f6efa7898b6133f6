"""Parameters and FLOPs of a config's model.

    python tools/model_info.py configs/common/models/yolov4.py --size 640
    python tools/model_info.py configs/common/models/yolov4.py --size 384 640 \
        --cfg-options model.backbone.widen_factor=0.5

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one image of the given size;
it counts a multiply-add as 2 FLOPs (so "GFLOPs" here = 2 x GMACs, the convention of Darknet's
BFLOPs and of Ultralytics' GFLOPs). Only matmul/conv-type ops are counted (BN, activations,
pooling and NMS are not).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from detkit.argtypes import positive_int
from detkit.cli import ArgumentParser, run_cli
from detkit.config import instantiate, load_config
from detkit.errors import UsageError


def count_params(module: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def count_flops(model: torch.nn.Module, height: int, width: int) -> int:
    """FLOPs (2 per multiply-add) of ``model(images)`` for one ``3 x height x width`` image."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, height, width))
    return int(counter.get_total_flops())


def model_info(model: torch.nn.Module, height: int, width: int) -> dict[str, float]:
    """Parameter counts (total and per part) and GFLOPs at ``height x width``."""
    total, trainable = count_params(model)
    info: dict[str, float] = {"params": total, "trainable_params": trainable}
    for part in ("backbone", "neck", "head"):
        sub = getattr(model, part, None)
        if isinstance(sub, torch.nn.Module):
            info[f"params_{part}"] = count_params(sub)[0]
    info["gflops"] = count_flops(model, height, width) / 1e9
    return info


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file with a `model` entry")
    parser.add_argument("--size", type=positive_int, nargs="+", default=[640], metavar="N",
                        help="input size: one number (square) or H W; multiples of 32")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides, e.g. model.head.num_classes=20")
    args = parser.parse_args(argv)
    if len(args.size) not in (1, 2) or min(args.size) < 1:
        parser.error(f"--size takes 1 or 2 positive numbers, got {args.size}")
    return args


def run(args: argparse.Namespace) -> None:
    height, width = (args.size * 2)[:2]
    cfg = load_config(args.config, args.cfg_options)
    model = instantiate(cfg.model, "model")
    divisor = int(getattr(model, "size_divisor", 1))
    if height % divisor or width % divisor:
        raise UsageError(f"--size {height} {width}: the model takes multiples of its largest stride {divisor}")
    info = model_info(model, height, width)
    print(f"model: {args.config}")
    print(f"params:    {info['params'] / 1e6:10.3f} M  ({info['params']:,})")
    if info["trainable_params"] != info["params"]:
        print(f"trainable: {info['trainable_params'] / 1e6:10.3f} M")
    for part in ("backbone", "neck", "head"):
        if f"params_{part}" in info:
            print(f"  {part:<8} {info[f'params_{part}'] / 1e6:10.3f} M")
    print(f"GFLOPs @ {height}x{width}: {info['gflops']:.2f}  (FlopCounterMode, 1 multiply-add = 2 FLOPs)")


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0, or 2 for a usage or config mistake (``error: ...`` on stderr)."""
    return run_cli(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
