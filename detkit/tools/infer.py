"""Run a detector on an image, a folder of images or a video; draw the boxes, write a json.

    python tools/infer.py CHECKPOINT INPUT [--compile [MODE]]             # PyTorch, the config stored inside
    python tools/infer.py CONFIG CHECKPOINT INPUT [--compile [MODE]]      # PyTorch, the given config
    python tools/infer.py MODEL.onnx INPUT                                 # ONNX Runtime (tools/export.py)
    python tools/infer.py MODEL.xml INPUT [--precision fp32|bf16]          # OpenVINO (export --format openvino)
        [--out DIR] [--device cpu|cuda] [--batch 8] [--score-thr 0.3] [--img-size 640]
        [--backend auto|torch|onnxruntime|openvino] [--threads N] [--no-spin] [--cfg-options ...]
        [--no-fuse] [--no-channels-last]

The backend follows the model file's suffix (``.onnx``: ONNX Runtime, ``.xml``: OpenVINO, else a PyTorch checkpoint)
unless ``--backend`` says otherwise. A checkpoint alone is built from the config the trainer
stored in it (read without running it; ``--cfg-options`` apply to it); one saved without a config
is an error asking for CONFIG. Detections are labelled with the class names the checkpoint was
trained with (its ``meta``, else its stored config's), not a given config's. Both backends share the pre- and
post-processing: frames are letterboxed as the config's evaluation pipeline does it (an ONNX
model carries those settings in its metadata), predicted in batches, and mapped back to original
pixels. ``--compile`` runs the PyTorch network through ``torch.compile`` (mode ``default``) with
inductor's freezing (inference only; see docs/deployment.md). On the CPU the PyTorch model and its input
run in channels_last (same outputs, faster; ``--no-channels-last`` keeps the contiguous layout).
``--no-spin`` makes ONNX Runtime's idle threads sleep instead of spin-waiting: faster on a machine
busy with other work (training, say), slower on a quiet one.
``DIR`` receives one drawn image per input (or ``<video name>.mp4``) and ``detections.json``.
Without ``--out`` each run gets a new folder, ``work_dirs/infer``, then ``work_dirs/infer2``,
``infer3``, ... (printed at the end): an earlier run's results are never replaced. A named ``--out``
that holds files is refused (exit status 2) unless ``--overwrite`` (files of the same name are
replaced). ``detections.json``:
``[{"file", "frame", "width", "height", "detections": [{"bbox": [x1, y1, x2, y2], "score", "label", "name"}]}]``.

Images are decoded as training reads them (EXIF orientation, 16-bit, alpha; docs/reliability.md).
In a folder, a file that cannot be read (not an image, truncated, empty) is skipped with a warning
naming it and the reason, and counted in the closing summary; the other images are processed. A
single unreadable image, a folder with no readable image, an ``--out`` that is a file, or a
checkpoint that does not fill the config's model is an error (exit status 2) before any output.
So is an ``--out`` that would replace an input (symlinks resolved): the input folder itself, the
folder holding the input image or video, the checkpoint or the config (a subfolder of the input
folder is fine: the folder is read flat). Numeric flags are range-checked (``--score-thr`` in
[0, 1], ``--batch`` and ``--img-size`` >= 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from detkit.argtypes import fraction, positive_int
from detkit.cli import ArgumentParser, run_cli
from detkit.errors import DataError, UsageError

if TYPE_CHECKING:
    from detkit.data.problems import ProblemLog

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


DEFAULT_OUT = Path("work_dirs") / "infer"  # without --out: this, else infer2, infer3, ... (numbered_dir)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="[CONFIG] CHECKPOINT INPUT, or MODEL.onnx INPUT; INPUT: an image, a folder of images, "
                        "a video")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: a new one per run, work_dirs/infer, work_dirs/infer2, ...)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a named --out that holds files (files of the same name are replaced)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--score-thr", type=fraction, default=0.3, help="keep detections scoring at least this (0..1)")
    p.add_argument("--img-size", type=positive_int, default=None,
                   help="network input side (default data.img_size or 640)")
    p.add_argument("--backend", default="auto",
                   help="auto (from the model file suffix) | torch | onnxruntime | openvino")
    p.add_argument("--precision", default="fp32", help="fp32 | bf16 (OpenVINO: bf16 where the CPU has it)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="ONNX Runtime / OpenVINO intra-op threads (default: the runtime's choice)")
    p.add_argument("--no-spin", action="store_true",
                   help="ONNX Runtime (.onnx): idle threads sleep instead of spin-waiting (faster on a busy machine)")
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   help="torch.compile the PyTorch model, frozen for inference "
                        "(mode: default | reduce-overhead | max-autotune)")
    p.add_argument("--no-fuse", action="store_true",
                   help="run the PyTorch model as trained (default: Conv + BatchNorm fused, same outputs, faster)")
    p.add_argument("--no-channels-last", action="store_true",
                   help="run the PyTorch model in the contiguous layout (default on the CPU: channels_last, "
                        "same outputs, faster)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    if len(args.paths) == 3:
        args.config, args.checkpoint, args.input = args.paths
    elif len(args.paths) == 2:
        args.config, (args.checkpoint, args.input) = None, args.paths
    else:
        p.error("expected [CONFIG] CHECKPOINT INPUT or MODEL.onnx INPUT")
    return args


def read_bgr(path: Path) -> np.ndarray:
    """``(H, W, 3) uint8`` BGR of an image file, decoded as training decodes it.

    Raises:
        ImageReadError: (an OSError) the file cannot be read; the message is the reason.
    """
    from detkit.data.imageio import read_image

    return cv2.cvtColor(read_image(str(path)), cv2.COLOR_RGB2BGR)


def iter_inputs(path: Path, skipped: ProblemLog) -> Iterator[tuple[str, int, np.ndarray]]:
    """(source name, frame index, BGR frame) for an image, a folder or a video.

    In a folder, unreadable files are counted in ``skipped`` (and warned about) instead.
    """
    from detkit.data.imageio import ImageReadError

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_EXTS)}) in folder {path}")
    elif path.suffix.lower() in VIDEO_EXTS:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise DataError(f"OpenCV cannot open video {path}")
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield path.name, index, frame
            index += 1
        cap.release()
        return
    elif path.is_file():
        try:
            frame = read_bgr(path)
        except ImageReadError as e:
            raise DataError(f"cannot read image {path}: {e}") from e
        yield path.name, 0, frame
        return
    else:
        raise DataError(f"input not found: {path}; give an image, a folder of images or a video "
                        f"({', '.join(VIDEO_EXTS)})")
    read = 0
    for f in files:
        try:
            frame = read_bgr(f)
        except ImageReadError as e:
            skipped.add(str(e), str(f))
            print(f"warning: skipped {f}: {e}", file=sys.stderr)
            continue
        read += 1
        yield f.name, 0, frame
    if not read:
        raise DataError(f"no readable image in folder {path}: {skipped.summary()}")


def batched(items: Iterator, n: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run(args: argparse.Namespace) -> list[dict]:
    from detkit.data.problems import ProblemLog
    from detkit.deploy import load_predictor
    from detkit.deploy.predictor import BACKENDS, resolve_backend
    from detkit.engine.output_paths import OutputPathError, check_not_input, check_output_dir, numbered_dir
    from detkit.io import atomic_write_bytes, atomic_write_text
    from detkit.viz import draw_detections

    named = args.out is not None
    if not named:  # a new folder per run: an earlier run's detections are never replaced
        args.out = str(numbered_dir(DEFAULT_OUT))
    # --out never replaces an input: not the input folder, not the folder holding the input image or video
    check_not_input(args.out, [args.input], "--out", names_from_inputs=True)
    check_not_input(args.out, [args.checkpoint, args.config], "--out")
    check_output_dir(args.out, "--out")
    if named and not args.overwrite and Path(args.out).is_dir() and any(Path(args.out).iterdir()):
        raise OutputPathError("--out {path}: holds files (an earlier run's?); pass --overwrite to write into it "
                              "(files of the same name are replaced), or name another --out", values={"path": args.out})
    src = Path(args.input)
    if not src.exists():
        raise DataError(f"input not found: {src}; give an image, a folder of images or a video "
                        f"({', '.join(VIDEO_EXTS)})")
    if args.backend not in BACKENDS:
        raise UsageError(f"--backend: unknown backend {args.backend!r}; accepted: {', '.join(BACKENDS)}")
    kind = resolve_backend(args.checkpoint, args.backend)
    if kind != "torch":
        if args.compile not in (None, "none"):
            raise UsageError(f"--compile applies to the PyTorch backend, not to {kind}")
        if args.cfg_options:
            raise UsageError("--cfg-options apply to the PyTorch backend; an exported model carries its settings")
    if args.precision != "fp32" and kind != "openvino":
        raise UsageError(f"--precision {args.precision}: only the OpenVINO backend (a .xml model) runs bf16")
    if args.no_spin and kind != "onnxruntime":
        raise UsageError(f"--no-spin applies to the ONNX Runtime backend (a .onnx model), not to {kind}")
    if args.no_channels_last and kind != "torch":
        raise UsageError(f"--no-channels-last applies to the PyTorch backend, not to {kind}")
    predictor = load_predictor(args.checkpoint, args.config, backend=args.backend, device=args.device,
                               img_size=args.img_size, cfg_options=args.cfg_options, compile_mode=args.compile,
                               fuse=not args.no_fuse, precision=args.precision, threads=args.threads,
                               spin=not args.no_spin, channels_last=not args.no_channels_last)
    meta = getattr(predictor.model, "metadata", None)
    if meta is not None and not meta.dynamic_batch:
        args.batch = 1  # exported with a fixed batch of 1
    names = predictor.class_names
    out = Path(args.out)
    if named:
        out.mkdir(parents=True, exist_ok=True)
    else:  # taken now, atomically: a run started beside this one may have made the folder chosen above
        out = numbered_dir(DEFAULT_OUT, create=True)
        args.out = str(out)
        try:
            check_not_input(out, [args.input], "--out", names_from_inputs=True)
        except OutputPathError:
            out.rmdir()
            raise
    is_video = src.is_file() and src.suffix.lower() in VIDEO_EXTS
    writer = None
    records: list[dict] = []
    skipped = ProblemLog(str(src))
    nonfinite = 0  # detections with a NaN/inf box or score: never drawn or written
    for chunk in batched(iter_inputs(src, skipped), args.batch):
        dets = predictor([f for _, _, f in chunk])
        for (name, index, frame), det in zip(chunk, dets):
            finite = det["boxes"].isfinite().all(-1) & det["scores"].isfinite()
            nonfinite += int((~finite).sum())
            keep = finite & (det["scores"] >= args.score_thr)
            boxes, scores, labels = det["boxes"][keep], det["scores"][keep], det["labels"][keep]
            drawn = draw_detections(frame, boxes, scores, labels, names)
            if is_video:
                if writer is None:
                    fps = cv2.VideoCapture(str(src)).get(cv2.CAP_PROP_FPS) or 25.0
                    writer = cv2.VideoWriter(str(out / (src.stem + ".mp4")), cv2.VideoWriter_fourcc(*"mp4v"),  # type: ignore[attr-defined]
                                             fps, (frame.shape[1], frame.shape[0]))
                writer.write(drawn)
            else:
                # encoded, then written atomically: a full disk is one line, never a silently missing image
                atomic_write_bytes(out / name, cv2.imencode(Path(name).suffix or ".png", drawn)[1].tobytes())
            records.append({
                "file": name, "frame": index, "width": frame.shape[1], "height": frame.shape[0],
                "detections": [{"bbox": b, "score": s, "label": int(c),
                                "name": names[int(c)] if names and int(c) < len(names) else str(int(c))}
                               for b, s, c in zip(boxes.tolist(), scores.tolist(), labels.tolist())],
            })
    if writer is not None:
        writer.release()
    atomic_write_text(out / "detections.json", json.dumps(records, indent=1, allow_nan=False))
    total = sum(len(r["detections"]) for r in records)
    print(f"{len(records)} image(s)/frame(s), {total} detections >= {args.score_thr} ({predictor.backend}); "
          f"written to {out}/")
    if nonfinite:
        print(f"warning: {nonfinite} detection(s) with a NaN/inf box or score left out: the model's outputs are "
              "broken (check the checkpoint for NaN weights)", file=sys.stderr)
    if skipped:
        reasons = "; ".join(f"{n} x {reason}" for reason, n in skipped.counts.most_common())
        print(f"{skipped.total} unreadable file(s) skipped: {reasons}")
    return records


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
