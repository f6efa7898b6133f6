"""A new user's own dataset trained with detkit and with Ultralytics: commands, time per epoch, run folder, AP.

    .venv-bench/bin/python benchmarks/own_data_vs_ultralytics.py DATA_YAML [--epochs 10] [--img-size 320]
        [--batch 16] [--workers 2] [--out work_dirs/own_data_vs_ultralytics]

DATA_YAML is an Ultralytics / Roboflow export (``python ../shared/tools/make_roboflow_export.py OUT
--classes 0 2 16`` lays coco128 out as one). Both sides train YOLOv8n from scratch (no pretrained
weights: none can be downloaded here) with the command a user types and each side's own defaults
otherwise; one run each, one after the other, in fresh processes:

- detkit: ``detkit train yolov8n_tal.py --data DATA_YAML --img-size S --cfg-options train.epochs=E ...``
- Ultralytics: ``yolo train data=DATA_YAML model=yolov8n.yaml epochs=E imgsz=S batch=B device=cpu
  pretrained=False``

Reported per side: the command, wall time of the whole command, seconds per epoch (detkit: between
its epoch checkpoints in ``train.log``; Ultralytics: its ``results.csv`` ``time`` column), the files
of the run folder and the size of the final weights, and AP. AP is measured twice for Ultralytics: by
its own validator (``results.csv``) and — for one yardstick — by converting its ``best.pt`` with
``detkit convert`` and evaluating it with ``detkit test`` (pycocotools), as detkit's own checkpoint
is. The load average before and after each side is printed: on a shared machine it moves times.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path


def sh(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` with its output in ``log``; the wall time. Exits on failure."""
    start = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}); see {log}")
    return wall


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def detkit_epoch_seconds(train_log: Path) -> list[float]:
    """Seconds between consecutive ``saved .../epoch_<k>.pth`` lines (the first from the work-dir line)."""
    stamps = []
    for line in train_log.read_text().splitlines():
        if re.search(r"INFO (work dir |saved .*epoch_\d+\.pth)", line):
            stamps.append(datetime.strptime(line[:8], "%H:%M:%S"))
    return [(b - a).total_seconds() % 86400 for a, b in zip(stamps, stamps[1:])]


def ultralytics_rows(results_csv: Path) -> list[dict[str, float]]:
    with results_csv.open() as f:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_ap(out: Path, checkpoint: Path, data: Path, img_size: int, log: Path) -> float:
    sh([sys.executable, "-m", "detkit", "test", "yolov8n_tal.py", str(checkpoint), "--data", str(data),
        "--img-size", str(img_size)], log)
    match = re.search(r"\(AP\) @\[ IoU=0\.50:0\.95 \| area=   all \| maxDets=100 \] = ([0-9.]+)", log.read_text())
    return float(match.group(1))


def folder(path: Path) -> str:
    return ", ".join(sorted(p.name for p in path.iterdir()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, help="an Ultralytics / Roboflow data.yaml")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("work_dirs/own_data_vs_ultralytics"))
    a = p.parse_args()
    if shutil.which("yolo") is None and not (Path(sys.executable).parent / "yolo").exists():
        sys.exit("needs ultralytics (make bench-setup; run with .venv-bench/bin/python)")
    yolo = str(Path(sys.executable).parent / "yolo")
    data = a.data.resolve()
    out = a.out.resolve()
    if out.exists():
        sys.exit(f"{out} exists: remove it or pass another --out")
    out.mkdir(parents=True)
    env_note = f"torch threads: default; CPUs: {os.cpu_count()}"

    dk_cmd = [sys.executable, "-m", "detkit", "train", "yolov8n_tal.py", "--data", str(data), "--img-size",
              str(a.img_size), "--work-dir", str(out / "detkit"), "--no-progress", "--cfg-options",
              f"train.epochs={a.epochs}", f"data.train.batch_size={a.batch}", f"data.val.batch_size={a.batch}",
              f"data.train.num_workers={a.workers}", f"data.val.num_workers={a.workers}"]
    u_cmd = [yolo, "train", f"data={data}", "model=yolov8n.yaml", f"epochs={a.epochs}", f"imgsz={a.img_size}",
             f"batch={a.batch}", "device=cpu", f"workers={a.workers}", "pretrained=False", f"project={out}",
             "name=ultralytics", "exist_ok=True"]

    before = load()
    dk_wall = sh(dk_cmd, out / "detkit.log")
    mid = load()
    u_wall = sh(u_cmd, out / "ultralytics.log")
    after = load()

    dk_epochs = detkit_epoch_seconds(out / "detkit" / "train.log")
    rows = ultralytics_rows(out / "ultralytics" / "results.csv")
    u_times = [r["time"] for r in rows]
    u_epochs = [b - a for a, b in zip([0.0, *u_times], u_times)]
    dk_ap = test_ap(out, out / "detkit" / "best.pth", data, a.img_size, out / "detkit_test.log")
    converted = out / "ultralytics_best_converted.pth"
    sh([sys.executable, "-m", "detkit", "convert", "ultralytics", str(out / "ultralytics" / "weights" / "best.pt"),
        str(converted)], out / "convert.log")
    u_ap_pycoco = test_ap(out, converted, data, a.img_size, out / "ultralytics_test.log")
    u_ap_own = max(r["metrics/mAP50-95(B)"] for r in rows)

    def mib(path: Path) -> str:
        return f"{path.stat().st_size / 2**20:.1f} MiB"

    print(f"# {data}: YOLOv8n from scratch, {a.epochs} epochs, {a.img_size} px, batch {a.batch}, {a.workers} "
          f"workers; {env_note}")
    print(f"load average: before detkit {before}; between {mid}; after Ultralytics {after}\n")
    print("| | detkit | Ultralytics |\n|---|---|---|")
    print(f"| command | `detkit train yolov8n_tal.py --data {data.name} --img-size {a.img_size} --cfg-options "
          f"train.epochs={a.epochs}` | `yolo train data={data.name} model=yolov8n.yaml epochs={a.epochs} "
          f"imgsz={a.img_size} pretrained=False` |")
    print(f"| wall time, whole command | {dk_wall:.0f} s | {u_wall:.0f} s |")
    print(f"| s / epoch (median, min) | {sorted(dk_epochs)[len(dk_epochs) // 2]:.1f}, {min(dk_epochs):.1f} | "
          f"{sorted(u_epochs)[len(u_epochs) // 2]:.1f}, {min(u_epochs):.1f} |")
    print(f"| AP, pycocotools (`detkit test`) | {dk_ap:.3f} | {u_ap_pycoco:.3f} (best.pt converted) |")
    print(f"| AP, Ultralytics' validator | - | {u_ap_own:.3f} (best epoch) |")
    print(f"| final weights | best.pth {mib(out / 'detkit' / 'best.pth')}, epoch_{a.epochs}.pth "
          f"{mib(out / 'detkit' / f'epoch_{a.epochs}.pth')} (resumable) | best.pt "
          f"{mib(out / 'ultralytics' / 'weights' / 'best.pt')} |")
    print(f"| run folder | {folder(out / 'detkit')} | {folder(out / 'ultralytics')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
