"""Training-step time of the demo's network with each head and loss, measured side by side.

    python benchmarks/head_step.py [--configs shapes_atss shapes_yolov8_tal shapes_yolox_simota ...] [--rounds 6]

One training step = forward, the head's loss pipeline, backward and an SGD step, on the same batch
of 16 shapes images at 320 px (the demo's batch, with its real boxes, read through the configs'
training data pipeline). The configs run in turn, round after round, so load on a shared machine
hits them alike; the median per config and its ratio to the first config are printed. The ratio is
the most a head can cost in a training run's wall time, where data loading and evaluation (the same
for every head) dilute it; ``17 / ratio`` is the fewest epochs of a config that fit in the time of
the first config's 17 (the README's head comparison measures wall times instead).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detkit.config import instantiate, load_config  # noqa: E402
from detkit.data import build_dataloader  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+",
                   default=["shapes_atss", "shapes_yolov8_tal", "shapes_yolox_simota", "shapes_rtmdet_dsl",
                            "shapes_yolov10_tal"])
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    cfgs = {name: load_config(ROOT / "configs" / f"{name}.py") for name in args.configs}
    first = cfgs[args.configs[0]]
    dataset = instantiate(first.data.train.dataset)
    batch = next(iter(build_dataloader(dataset, first.data.train.batch_size, num_workers=0, shuffle=True, seed=0)))
    models, optims = {}, {}
    for name, cfg in cfgs.items():
        models[name] = instantiate(cfg.model).train()
        optims[name] = torch.optim.SGD(models[name].parameters(), lr=1e-4, momentum=0.9)
    times: dict[str, list[float]] = {name: [] for name in cfgs}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, model in models.items():
            t0 = time.perf_counter()
            out = model.loss(batch)
            sum(v for k, v in out.items() if k.startswith("loss_")).backward()
            optims[name].step()
            optims[name].zero_grad(set_to_none=True)
            if r:
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[args.configs[0]])
    print(f"batch {batch['images'].shape[0]} x {tuple(batch['images'].shape[-2:])}, {args.rounds} rounds, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| config | params | step (s, median) | ratio | 17 / ratio |")
    print("|---|---:|---:|---:|---:|")
    for name in cfgs:
        t = statistics.median(times[name])
        params = sum(q.numel() for q in models[name].parameters())
        print(f"| {name} | {params:,} | {t:.3f} | {t / base:.2f} | {17 * base / t:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
