"""Run every benchmark in this folder, one after the other, and print their tables.

    make bench            # sets up .venv-bench (detkit + ultralytics + faster-coco-eval), then this
    python benchmarks/run_all.py [--only assigners postprocess]

Each script prints its own measured figures (markdown tables, both sides of a comparison measured in
the same run); copy them into docs/benchmarks.md with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["assigners", "assigners_vs_ultralytics", "dense_scene", "loss_pipeline", "head_step", "postprocess",
           "coco_eval", "data_loader", "backbone_layouts", "compile"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=None, choices=SCRIPTS)
    args = parser.parse_args()
    import torch

    print(f"# detkit benchmarks, {datetime.date.today()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, "
          f"{torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}")
    failed = []
    for name in args.only or SCRIPTS:
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"\n({name}: no script yet)")
            continue
        print(f"\n---- {name} ----", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)])
        print(f"({name}: {time.perf_counter() - t0:.0f} s, exit {rc})", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
