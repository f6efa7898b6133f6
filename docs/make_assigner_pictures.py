"""Draw what each assignment rule assigns on one real coco128 image, for the docs' assigner pages.

Run by hand (not by ``make docs``; it needs coco128 and about 20 s), from the repository root::

    .venv/bin/python docs/make_assigner_pictures.py              # coco128 from ../shared/data or $DETKIT_COCO128
    .venv/bin/python docs/make_assigner_pictures.py --data PATH  # another YOLO root, data.yaml or COCO json

It calls ``detkit compare`` (``detkit/tools/compare_assigners.py``) once with every rule on the first
image of the split (``--images 1 --samples 1``), cuts the side-by-side picture into one panel per rule
and writes ``docs/assigners/img/<rule>.png`` (downscaled and palette-quantised to stay under 150 KB).
The model is ``configs/coco128_atss.py``'s, untrained: YOLOv4's 9 anchors are the priors (point-based
rules read their centres) and the prediction-aware rules (SimOTA, TAL, DSL) see an untrained model's
predictions, as in the table on docs/comparing_assigners.md.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "assigners" / "img"
# file name -> preset name (detkit.assigners.presets.ASSIGNER_PRESETS)
RULES = {
    "grid": "grid",
    "yolov5": "yolov5",
    "max_iou": "iou",
    "atss": "atss",
    "atss_minpos": "atss+minpos",
    "fcos": "fcos",
    "simota": "simota",
    "tal": "tal",
    "tal_ultralytics": "tal-ultralytics",
    "dsl": "dsl",
    "dsl_mmyolo": "dsl-mmyolo",
}
PANEL = 640  # the config's input size: compare_assigners draws one PANEL x PANEL picture per rule
WIDTH = 480  # written width


def default_data() -> Path:
    env = os.environ.get("DETKIT_COCO128")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "coco128"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: coco128 under ../shared/data)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    data = args.data or default_data()
    if not data.exists():
        print(f"error: {data} not found: the pictures need coco128 (../shared/data/coco128, $DETKIT_COCO128 "
              "or --data); the committed ones are kept", file=sys.stderr)
        return 2
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "detkit", "compare", "configs/coco128_atss.py", "--data", str(data),
               "--assigners", *RULES.values(), "--images", "1", "--samples", "1", "--out", tmp]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        pictures = sorted(Path(tmp).glob("assign_*.png"))
        if len(pictures) != 1:
            print(f"error: expected one assign_*.png from detkit compare, got {len(pictures)}", file=sys.stderr)
            return 1
        strip = Image.open(pictures[0]).convert("RGB")
        if strip.width != PANEL * len(RULES):
            print(f"error: {pictures[0].name} is {strip.width} px wide, expected {len(RULES)} panels of {PANEL}",
                  file=sys.stderr)
            return 1
        args.out.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(RULES):
            panel = strip.crop((i * PANEL, 0, (i + 1) * PANEL, strip.height))
            panel = panel.resize((WIDTH, round(strip.height * WIDTH / PANEL)), Image.LANCZOS)
            path = args.out / f"{name}.png"
            panel.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
            print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
