"""CPU inference of YOLOv8n at 640 px, every deployment path, detkit's and Ultralytics' on the same weights.

    .venv-bench/bin/python benchmarks/cpu_inference.py [--threads 2] [--rounds 12] [--batches 1 8]
        [--calib-images 128] [--settle 0.2] [--no-ultralytics-int8] [--no-ultralytics] [--paths REGEX]
        [--int8-keep-float REGEX] [--out FILE.md]

A randomly initialised Ultralytics ``yolov8n.yaml`` (80 classes; BatchNorm statistics measured on random
images, as ``parity_ultralytics_weights.py`` makes it) is saved as Ultralytics releases a checkpoint and
converted by ``tools/convert_weights.py``. From the same weights:

* detkit: eager (``Detector.forward_decoded``), fused eager (:func:`detkit.models.fuse.fused_copy`), fused in
  channels_last (``detkit infer``'s CPU default), fused and compiled with freezing (``--compile``),
  ONNX Runtime on ``export_onnx``'s graph (as exported, with idle threads not spinning, and after
  ``onnxslim``), OpenVINO fp32 / bf16 / int8 and int8 with the head's prediction convs quantized too
  (``export --int8-head``, Ultralytics' choice) (:func:`detkit.deploy.openvino_runtime.export_openvino`;
  int8 calibrated on ``--calib-images`` coco128 images letterboxed by detkit);
* Ultralytics: eager and fused ``DetectionModel``, and its own exports (``YOLO.export(format="onnx")``,
  ``format="openvino"``, ``format="openvino", int8=True`` calibrated on coco128 through a data yaml)
  run by the same ONNX Runtime / OpenVINO settings.

Each path runs the network only (a letterboxed float32 batch in, decoded boxes and scores out; no
pre/post-processing, which both sides do alike: both exported graphs end channel-first, detkit's in ``(B, 4,
N)`` / ``(B, C, N)``, Ultralytics' in ``(B, 4 + C, N)``, which each side's NMS transposes), ``--threads``
threads everywhere (torch, ORT intra-op, ``INFERENCE_NUM_THREADS``). The paths alternate within each round
(one call each, round after round), so a change of machine load hits all of them; ms/image best-of-N and
median are printed with the load average. Achieved GFLOP/s = the model's FLOPs (``torch.utils.flop_counter``
on detkit's eager forward, 2 per multiply-add) / time, as a fraction of this machine's fp32 GEMM rate
(``torch.mm`` 2048^3) and, for int8 paths, of its int8 GEMM rate (``torch._int_mm`` 2048^3), both measured
here with the same threads.

Each timed call waits ``--settle`` seconds (default 0.2) first: a path run right after ONNX Runtime (whose idle
threads spin-wait after a call) or eager PyTorch (OpenMP's threads likewise) otherwise shares the two cores with
those threads (OpenVINO fp32 at batch 1 took 66 ms after ONNX Runtime, 46-51 ms after a pause).

``--int8-keep-float REGEX`` adds "detkit OV int8 float-kept": int8 with the convolutions whose OpenVINO
names match REGEX left in float too (what accuracy control keeps, e.g. ``KEEP_FLOAT_DEMO_KINDS``: the
kinds of layers ``export --int8-max-drop 1`` put back in float on the demo model), to price them.
``--paths REGEX`` times only the paths whose names match; ``--no-ultralytics`` leaves Ultralytics out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_OFFLINE", "True")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

COCO128 = ROOT.parent / "shared" / "data" / "coco128"
SIZE = 640
# YOLOv8n's convolutions of the kinds accuracy control (export --int8-max-drop 1) put back in float on the demo
# model (shapes_yolov8_tal, YOLOv5 layout: its P3 top-down block's late conv, the first stride-2 neck conv, the
# two P3 head stems; 4 convs besides the prediction convs)
KEEP_FLOAT_DEMO_KINDS = r"td_blocks\.1/cv2/|neck/down\.0/|box_convs\.0\.0/|cls_convs\.0\.0/"


def gemm_rates(threads: int, n: int = 2048, repeats: int = 5) -> tuple[float, float]:
    """(fp32 GFLOP/s of ``torch.mm``, int8 GOP/s of ``torch._int_mm``), best of ``repeats``, n x n x n."""
    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    qa = torch.randint(-128, 127, (n, n), dtype=torch.int8)
    qb = torch.randint(-128, 127, (n, n), dtype=torch.int8)
    rates = []
    for fn, x, y in ((torch.mm, a, b), (torch._int_mm, qa, qb)):
        fn(x, y)
        best = min(_timed(fn, x, y) for _ in range(repeats))
        rates.append(2 * n**3 / best / 1e9)
    return rates[0], rates[1]


def _timed(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def model_flops(model: torch.nn.Module) -> float:
    """FLOPs of one 640 px image through ``model.forward_decoded`` (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.forward_decoded(torch.rand(1, 3, SIZE, SIZE))
    return float(counter.get_total_flops())


def calibration_images(count: int) -> list[np.ndarray]:
    """``count`` coco128 images letterboxed to 640 by detkit: (1, 3, 640, 640) float32 each."""
    import cv2

    from detkit.deploy import LetterboxSettings, letterbox_images

    files = sorted((COCO128 / "images" / "train2017").glob("*.jpg"))[:count]
    return [letterbox_images([cv2.imread(str(f))], LetterboxSettings((SIZE, SIZE)))["images"].numpy() for f in files]


class _Decoded(torch.nn.Module):
    """A detector whose forward is its ``forward_decoded`` (what torch.compile compiles for inference)."""

    def __init__(self, detector: torch.nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> object:
        return self.detector.forward_decoded(images)


def build_detkit(folder: Path, args: argparse.Namespace) -> tuple[dict[str, Callable], float, object]:
    """detkit's paths on the converted weights: name -> fn(images np (B,3,H,W)); the FLOPs per image."""
    from parity_ultralytics_weights import convert_like_a_user, random_ultralytics_model, save_like_ultralytics

    from detkit.deploy import build_metadata, export_onnx
    from detkit.deploy.onnx_runtime import OnnxDetector
    from detkit.deploy.openvino_runtime import OpenVinoDetector, export_openvino
    from detkit.deploy.preprocess import LetterboxSettings
    from detkit.engine.checkpoint_config import load_checkpoint_model
    from detkit.engine.compile import maybe_compile
    from detkit.models.fuse import fused_copy
    from detkit.models.memory_format import images_to_channels_last, to_inference_memory_format

    ul = random_ultralytics_model("yolov8", "n", 80, seed=0)
    paths = save_like_ultralytics(ul, folder)
    converted = convert_like_a_user(paths["model (stripped)"], folder)
    if isinstance(converted, str):
        raise SystemExit(converted)
    model = load_checkpoint_model(converted[0], ROOT / "configs" / "yolov8n_tal.py").detector.eval()
    fused = fused_copy(model)
    meta = build_metadata(model, LetterboxSettings((SIZE, SIZE)), dynamic_batch=True)
    onnx_path = export_onnx(model, folder / "detkit.onnx", meta)
    xml = export_openvino(onnx_path, folder / "detkit.xml")
    t = time.perf_counter()
    xml8 = export_openvino(onnx_path, folder / "detkit_int8.xml", calibration=calibration_images(args.calib_images),
                           calibration_size=args.calib_images)
    print(f"detkit int8 export (NNCF, {args.calib_images} images): {time.perf_counter() - t:.0f} s", flush=True)
    xml8h = export_openvino(onnx_path, folder / "detkit_int8_head.xml",
                            calibration=calibration_images(args.calib_images), calibration_size=args.calib_images,
                            quantize_head=True)
    xml8k = None
    if args.int8_keep_float:
        import re

        import openvino as ov

        pattern = re.compile(args.int8_keep_float)
        names = [op.get_friendly_name() for op in ov.Core().read_model(str(xml)).get_ordered_ops()
                 if op.get_type_name() == "Convolution" and pattern.search(op.get_friendly_name())]
        print(f"int8 float-kept: {len(names)} convolutions match {args.int8_keep_float!r}", flush=True)
        xml8k = export_openvino(onnx_path, folder / "detkit_int8_kept.xml",
                                calibration=calibration_images(args.calib_images),
                                calibration_size=args.calib_images, keep_float=names)
    fused_cl = to_inference_memory_format(fused_copy(model), "cpu")  # detkit's torch default on the CPU
    compiled = maybe_compile(_Decoded(fused_copy(model)), "default", freeze=True)  # `infer --compile`

    def run_compiled(x: np.ndarray) -> object:
        with torch.no_grad():  # inductor's freezing applies under no_grad
            return compiled(torch.from_numpy(x))

    fns: dict[str, Callable] = {
        "detkit eager": lambda x: model.forward_decoded(torch.from_numpy(x)),
        "detkit fused eager": lambda x: fused.forward_decoded(torch.from_numpy(x)),
        "detkit fused eager channels_last": lambda x: fused_cl.forward_decoded(
            images_to_channels_last(torch.from_numpy(x))),
        "detkit compiled (freeze)": run_compiled,
        "detkit ORT": OnnxDetector(onnx_path, threads=args.threads).run,
        "detkit ORT no spin": OnnxDetector(onnx_path, threads=args.threads,
                                           session_config={"session.intra_op.allow_spinning": "0"}).run,
    }
    try:
        import onnx
        import onnxslim

        slim = folder / "detkit_slim.onnx"
        onnx.save(onnxslim.slim(onnx.load(str(onnx_path))), str(slim))
        fns["detkit ORT onnxslim"] = OnnxDetector(slim, threads=args.threads).run
    except ImportError as e:
        print(f"onnxslim not measured: {e}")
    fns["detkit OV fp32"] = OpenVinoDetector(xml, threads=args.threads).run
    if "BF16" in __import__("openvino").Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        fns["detkit OV bf16"] = OpenVinoDetector(xml, precision="bf16", threads=args.threads).run
    fns["detkit OV int8"] = OpenVinoDetector(xml8, threads=args.threads).run
    fns["detkit OV int8 --int8-head"] = OpenVinoDetector(xml8h, threads=args.threads).run
    if xml8k is not None:
        fns["detkit OV int8 float-kept"] = OpenVinoDetector(xml8k, threads=args.threads).run
    return fns, model_flops(model), paths["model (stripped)"]


def build_ultralytics(weights: Path, folder: Path, args: argparse.Namespace) -> dict[str, Callable]:
    """Ultralytics' paths: its model eager and fused, its own ONNX / OpenVINO (fp32, int8) exports."""
    import onnxruntime as ort
    import openvino as ov
    from ultralytics import YOLO
    from ultralytics.nn.tasks import load_checkpoint

    eager = load_checkpoint(str(weights), fuse=False)[0].float().eval()
    fused = load_checkpoint(str(weights), fuse=True)[0].float().eval()
    fns: dict[str, Callable] = {"ultralytics eager": lambda x: eager(torch.from_numpy(x)),
                                "ultralytics fused eager": lambda x: fused(torch.from_numpy(x))}
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    core = ov.Core()

    def ov_fn(path: str, hint: str) -> Callable:
        compiled = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                    "INFERENCE_NUM_THREADS": args.threads})
        request = compiled.create_infer_request()
        return lambda x: request.infer({0: x})

    def export(**kw: object) -> str | None:
        try:
            return str(YOLO(str(weights)).export(imgsz=SIZE, dynamic=True, batch=8, **kw))
        except Exception as e:  # noqa: BLE001 - reported, the other paths still run
            print(f"ultralytics export {kw} failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            return None

    onnx_file = export(format="onnx")
    if onnx_file:
        session = ort.InferenceSession(onnx_file, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        fns["ultralytics ORT"] = lambda x: session.run(None, {name: x})
    ov_dir = export(format="openvino")
    if ov_dir:
        xml = next(Path(ov_dir).glob("*.xml"))
        fns["ultralytics OV fp32"] = ov_fn(str(xml), "f32")
        fns["ultralytics OV bf16"] = ov_fn(str(xml), "bf16")
    if args.ultralytics_int8:
        data = folder / "coco128.yaml"
        names = (COCO128 / "names.txt").read_text().split("\n")
        data.write_text(f"path: {COCO128}\ntrain: images/train2017\nval: images/train2017\nnames:\n"
                        + "".join(f"  {i}: {n}\n" for i, n in enumerate(n for n in names if n)))
        ov8 = export(format="openvino", int8=True, data=str(data), fraction=args.calib_images / 128)
        if ov8:
            fns["ultralytics OV int8"] = ov_fn(str(next(Path(ov8).glob("*.xml"))), "f32")
    return fns


def measure(fns: dict[str, Callable], batch: int, rounds: int, settle: float = 0.0) -> dict[str, list[float]]:
    """ms/image of every path, ``rounds`` alternated calls each (after 2 warm-up calls), each call ``settle``
    seconds after the previous one: the threads of the path before (ONNX Runtime's and OpenMP's spin-wait after
    a call) are asleep by then instead of competing with the next path for the two cores."""
    x = np.random.default_rng(0).random((batch, 3, SIZE, SIZE), dtype=np.float32)
    with torch.no_grad():
        for fn in fns.values():
            fn(x), fn(x)
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                time.sleep(settle)
                times[name].append(_timed(fn, x) * 1000 / batch)
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--calib-images", type=int, default=128)
    p.add_argument("--settle", type=float, default=0.2, metavar="SECONDS",
                   help="pause before each timed call: the previous path's spinning threads fall asleep (default 0.2)")
    p.add_argument("--no-ultralytics-int8", dest="ultralytics_int8", action="store_false")
    p.add_argument("--no-ultralytics", dest="ultralytics", action="store_false", help="detkit's paths only")
    p.add_argument("--paths", default=None, metavar="REGEX", help="time only the paths whose names match")
    p.add_argument("--int8-keep-float", default=None, metavar="REGEX",
                   help="add an int8 path with the matching convolutions in float (demo: KEEP_FLOAT_DEMO_KINDS; "
                        "pass 'demo' for it)")
    p.add_argument("--out", default=None, help="also write the tables (markdown) here")
    args = p.parse_args()
    if args.int8_keep_float == "demo":
        args.int8_keep_float = KEEP_FLOAT_DEMO_KINDS
    torch.set_num_threads(args.threads)
    fp32_rate, int8_rate = gemm_rates(args.threads)
    lines = [f"machine: {os.cpu_count()} CPUs, {args.threads} threads; fp32 GEMM {fp32_rate:.0f} GFLOP/s "
             f"(torch.mm 2048^3), int8 GEMM {int8_rate:.0f} GOP/s (torch._int_mm 2048^3)"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fns, flops, weights = build_detkit(folder, args)
        if args.ultralytics:
            fns.update(build_ultralytics(Path(str(weights)), folder, args))
        if args.paths:
            import re

            fns = {k: v for k, v in fns.items() if re.search(args.paths, k)}
        torch.set_num_threads(args.threads)  # an exporter may have changed it
        lines.append(f"YOLOv8n at {SIZE}: {flops / 1e9:.2f} GFLOPs per image (torch.utils.flop_counter)")
        for batch in args.batches:
            load0 = os.getloadavg()[0]
            times = measure(fns, batch, args.rounds, args.settle)
            load1 = os.getloadavg()[0]
            lines += ["", f"batch {batch}: {args.rounds} alternated rounds, load average {load0:.1f} -> {load1:.1f}",
                      "", "| path | best ms/img | median ms/img | GFLOP/s (best) | of fp32 GEMM | of int8 GEMM |",
                      "|---|---:|---:|---:|---:|---:|"]
            for name, ts in times.items():
                best, med = min(ts), statistics.median(ts)
                rate = flops / (best / 1000) / 1e9
                int8 = f"{rate / int8_rate:.0%}" if "int8" in name else ""
                lines.append(f"| {name} | {best:.1f} | {med:.1f} | {rate:.0f} | {rate / fp32_rate:.0%} | {int8} |")
            print("\n".join(lines[-len(times) - 5:]), flush=True)
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
