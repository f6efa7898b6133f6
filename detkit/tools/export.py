"""Export a trained detector for deployment (ONNX, OpenVINO), with a parity check against PyTorch.

    python tools/export.py [CONFIG] CHECKPOINT [--format onnx|openvino] [--out PATH] [--opset 17]
        [--dynamic-batch] [--with-nms] [--img-size N | --img-size H W] [--cfg-options ...] [--no-verify]
        [--int8 [--calib-images 300] [--int8-head] [--int8-max-drop AP_POINTS [--accuracy-images 200]]]

``--format openvino`` writes the ONNX graph converted to OpenVINO IR (``.xml`` + ``.bin``, the metadata
in its ``rt_info``; needs ``pip install 'detkit[openvino]'``); ``--int8`` quantizes it with NNCF,
calibrated on ``--calib-images`` images of the config's training split letterboxed as at inference
(the int8 outputs are reported against PyTorch, not held to ``--tolerance``: ``tools/test.py MODEL.xml``
measures the AP they cost). ``--int8-max-drop 1.0`` adds NNCF's accuracy control: layers are put back in
float, the most harmful first, until the AP on ``--accuracy-images`` other training images (never the
calibration ones, never the val split) is at most that many AP points under the float model's.
``--int8-head`` quantizes the head's prediction convolutions too (by default they stay in float, with
the decoding: more accurate, 0.3-0.8 ms per 640 px image slower on YOLOv8n). bf16 is chosen at inference
(``tools/infer.py --precision bf16``).

Without CONFIG the model is built from the config the trainer stored in the checkpoint (see
``tools/infer.py``); the class names written into the metadata are the checkpoint's.

The graph takes ``images (B, 3, H, W)`` float32 RGB in 0..1, letterboxed as the config's
evaluation pipeline does it, and returns decoded ``boxes (B, 4, N)`` (xyxy, input pixels) and
``scores (B, C, N)``, channel-first as the network computes them (metadata ``channels_first``; detkit's
runtimes read them through transposed views); with ``--with-nms`` it ends in ONNX ``NonMaxSuppression`` and returns
``num_dets, det_boxes, det_scores, det_labels`` (at most ``max_per_img`` per image). A one-to-one head
(``model.head.nms=False``: YOLOv10's, YOLO26's) is exported without any NMS op: its ``--with-nms``
graph keeps the top ``max_per_img`` (prior, class) scores above ``score_thr`` (ONNX ``TopK``), as
``tools/test.py`` and Ultralytics' end-to-end output select them. Class names,
input size, letterbox, stride and the post-processing settings (``model.head.score_thr``, ...;
change them with ``--cfg-options``) are stored as ONNX metadata, which ``tools/infer.py model.onnx
INPUT`` reads. Default output: the checkpoint's path with ``.onnx`` (``_nms.onnx`` with NMS); when
that file (or the ``.xml`` / ``.bin``) exists already the export is refused (exit status 2) unless
``--overwrite``: a file the user did not name is never replaced (a named ``--out`` is written over).
After writing, ONNX Runtime runs the model on a random batch and the outputs are compared with
PyTorch's (exit status 1 when they differ by more than ``--tolerance``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detkit.argtypes import nonnegative_float, positive_int
from detkit.cli import ArgumentParser, run_cli
from detkit.errors import CheckpointError, UsageError

FORMATS = ("onnx", "openvino")
ACCURACY_IMAGES = 200


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="[CONFIG] CHECKPOINT (without CONFIG: the one stored "
                                                              "in the checkpoint)")
    p.add_argument("--format", default="onnx", help=f"export format: {' | '.join(FORMATS)}")
    p.add_argument("--out", default=None, help="output file (default: next to the checkpoint)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the default output next to the checkpoint when it exists (a named --out is "
                        "written over anyway)")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (>= 17)")
    p.add_argument("--dynamic-batch", action="store_true", help="leave the batch dimension free")
    p.add_argument("--with-nms", action="store_true", help="end the graph with NonMaxSuppression")
    p.add_argument("--img-size", type=positive_int, nargs="+", default=None, metavar="N",
                   help="input side, or H W (default data.img_size; rounded up to the stride)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime parity check")
    p.add_argument("--tolerance", type=nonnegative_float, default=1e-3,
                   help="largest accepted |ONNX - PyTorch| (default 1e-3)")
    p.add_argument("--int8", action="store_true", help="--format openvino: int8 by NNCF post-training quantization")
    p.add_argument("--calib-images", type=positive_int, default=300,
                   help="--int8: training images to calibrate on (default 300)")
    p.add_argument("--int8-head", action="store_true",
                   help="--int8: quantize the head's prediction convolutions too (Ultralytics' choice): faster, "
                        "less accurate (default: they stay in float)")
    p.add_argument("--int8-max-drop", type=nonnegative_float, default=None, metavar="AP_POINTS",
                   help="--int8: accuracy control, the largest accepted AP drop in AP points (0-100 scale: 1.0 = "
                        "one point) on held-out training images; layers go back to float until it holds (slow: "
                        "the held-out images are evaluated once per group of layers: 6x plain --int8 on the demo)")
    p.add_argument("--accuracy-images", type=positive_int, default=None,
                   help="--int8-max-drop: training images, none of the calibration ones, to measure the drop on "
                        f"(default {ACCURACY_IMAGES})")
    args = p.parse_args(argv)
    if len(args.paths) > 2:
        p.error("expected [CONFIG] CHECKPOINT")
    args.config, args.checkpoint = ([None] + args.paths)[-2:]
    return args


def verify(model: torch.nn.Module, path: Path, tolerance: float, seed: int = 0) -> dict[str, float]:
    """Largest |ONNX Runtime - PyTorch| per output on a random batch (2 images when the batch is free).

    A graph without NMS is compared output by output. A graph with NMS is checked in two parts,
    since NMS is discontinuous (two boxes whose scores differ by 1e-7 between backends may swap,
    and the swap changes what each suppresses): the network up to decoded boxes and scores
    (exported once more without NMS, to a temporary file) against PyTorch, then the NMS graph's
    detections against PyTorch's NMS run on ONNX Runtime's own decoded outputs.
    """
    import tempfile
    from dataclasses import replace

    from detkit.deploy import export_onnx
    from detkit.deploy.graph_nms import padded_nms
    from detkit.deploy.onnx_export import export_module
    from detkit.deploy.runtimes import open_exported

    runtime = open_exported(path)
    meta = runtime.metadata
    images = torch.rand(2 if meta.dynamic_batch else 1, 3, *meta.input_size,
                        generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = export_module(model, meta).eval()(images)
    got = runtime.run(images)
    if meta.with_nms:
        plain_meta = replace(meta, with_nms=False)
        with tempfile.TemporaryDirectory() as tmp:
            plain = export_onnx(model, Path(tmp) / "decoded.onnx", plain_meta)
            if path.suffix == ".xml":  # the same network through the same backend
                from detkit.deploy.openvino_runtime import export_openvino

                plain = export_openvino(plain, Path(tmp) / "decoded.xml")
            decoded = open_exported(plain).run(images)
        with torch.no_grad():
            reference = export_module(model, plain_meta).eval()(images)
        diffs = _max_diffs(plain_meta.output_names, reference, decoded)
        expected = padded_nms(torch.from_numpy(decoded["boxes"]), torch.from_numpy(decoded["scores"]),
                              **meta.postprocess)
        scores = decoded["scores"]
        expected = _tie_order(dict(zip(meta.output_names, (t.numpy() for t in expected))), scores)
        return {**diffs, **_max_diffs(meta.output_names, [torch.from_numpy(expected[k]) for k in meta.output_names],
                                      _tie_order(got, scores))}
    return _max_diffs(meta.output_names, expected, got)


def _tie_order(dets: dict[str, np.ndarray], scores: np.ndarray) -> dict[str, np.ndarray]:
    """NMS outputs made comparable across backends where exact score ties decide.

    Each image's detections are sorted by (score desc, label, box): detections of exactly equal
    score leave a top-k in either order. And where a detection's score is shared by another prior
    of its class in the decoded ``scores (B, N, C)``, NMS may keep either of the two, so its box is
    zeroed: only its score and label are compared.
    """
    out = {k: v.copy() for k, v in dets.items()}
    for b in range(dets["det_scores"].shape[0]):
        boxes, labels, det_scores = dets["det_boxes"][b], dets["det_labels"][b], dets["det_scores"][b]
        order = np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], labels, -det_scores))
        boxes, labels, det_scores = boxes[order], labels[order], det_scores[order]
        tied = np.array([lab >= 0 and int((scores[b, :, lab] == sc).sum()) > 1 for lab, sc in zip(labels, det_scores)],
                        dtype=bool)
        out["det_boxes"][b] = np.where(tied[:, None], 0.0, boxes)
        out["det_labels"][b], out["det_scores"][b] = labels, det_scores
    return out


def _max_diffs(names: Sequence[str], expected: Sequence[torch.Tensor], got: dict[str, np.ndarray]) -> dict[str, float]:
    diffs = {}
    for name, tensor in zip(names, expected):
        ref = tensor.numpy()
        if got[name].shape != ref.shape:
            raise RuntimeError(f"ONNX output {name} has shape {got[name].shape}, PyTorch {ref.shape}")
        diffs[name] = float(np.abs(got[name].astype(np.float64) - ref).max()) if ref.size else 0.0
    return diffs


def _accuracy_control(args: argparse.Namespace, cfg: Any, letterbox: Any, model: torch.nn.Module) -> Any:
    """The :class:`~detkit.deploy.openvino_runtime.AccuracyControl` of ``--int8-max-drop``: COCO AP
    on ``--accuracy-images`` training images that calibration does not read."""
    from detkit.deploy.calibration import held_out_ap, held_out_set
    from detkit.deploy.openvino_runtime import AccuracyControl

    count = args.accuracy_images or ACCURACY_IMAGES
    held = held_out_set(cfg, letterbox, count, args.calib_images, int(getattr(model, "size_divisor", 32)))
    return AccuracyControl(lambda detector, items: held_out_ap(detector, held, items), len(held.indices),
                           args.int8_max_drop / 100)


def run(args: argparse.Namespace) -> Path:
    from detkit.deploy import build_metadata, export_onnx, letterbox_from_config
    from detkit.deploy.onnx_export import MIN_OPSET
    from detkit.engine.checkpoint_config import load_checkpoint_model
    from detkit.engine.output_paths import OutputPathError, check_not_input, check_output_file
    from detkit.extras import require

    if args.format not in FORMATS:
        raise UsageError(f"unsupported export format {args.format!r}; accepted: {', '.join(FORMATS)}")
    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        raise CheckpointError(f"checkpoint not found: {ckpt}")
    if args.img_size is not None and len(args.img_size) not in (1, 2):
        raise UsageError(f"--img-size takes one side or H W, got {args.img_size}")
    if args.opset < MIN_OPSET:
        raise UsageError(f"--opset {args.opset} is not supported; use {MIN_OPSET} or newer")
    openvino = args.format == "openvino"
    if args.int8 and not openvino:
        raise UsageError("--int8 needs --format openvino (int8 runs through OpenVINO)")
    if args.int8_head and not args.int8:
        raise UsageError("--int8-head needs --int8 (it chooses which convolutions int8 quantizes)")
    if args.int8_max_drop is not None and not args.int8:
        raise UsageError("--int8-max-drop needs --int8 (it controls the accuracy of int8 quantization)")
    if args.int8_max_drop is not None and args.int8_max_drop >= 100:
        raise UsageError(f"--int8-max-drop {args.int8_max_drop:g}: an AP drop in points must be under 100 "
                         "(1.0 = one AP point)")
    if args.accuracy_images is not None and args.int8_max_drop is None:
        raise UsageError("--accuracy-images needs --int8-max-drop (the held-out images of accuracy control)")
    suffix = ".xml" if openvino else ".onnx"
    default_name = ckpt.stem + ("_nms" if args.with_nms else "") + ("_int8" if args.int8 else "") + suffix
    out = Path(args.out) if args.out else ckpt.with_name(default_name)
    existing = [p for p in (out, *([out.with_suffix(".bin")] if openvino else [])) if os.path.lexists(p)]
    if not args.out and existing and not args.overwrite:  # a file the user did not name is never replaced
        raise OutputPathError("{path} exists (an earlier export?); pass --overwrite to replace it, or name the "
                              "output with --out PATH", values={"path": existing[0]})
    check_not_input(out, [ckpt, args.config], "--out")  # before any work
    check_output_file(out, "--out")
    if out.suffix != suffix:
        raise UsageError(f"--out {out}: {'OpenVINO' if openvino else 'ONNX'} output path must end in {suffix}")
    if openvino:
        check_output_file(out.with_suffix(".bin"), "--out (its .bin)")
    require("onnx", "ONNX export")  # a missing extra: one line, before the model is built
    if openvino:
        require("openvino", "OpenVINO export")
        if args.int8:
            require("nncf", "int8 quantization (NNCF)")
    elif not args.no_verify:
        require("onnxruntime", "the ONNX Runtime parity check after export (or pass --no-verify)")
    # export only a model the checkpoint fills whole; its own class names, its own config when none is given
    loaded = load_checkpoint_model(ckpt, args.config, args.cfg_options)
    cfg, model = loaded.cfg, loaded.detector
    img_size = None if args.img_size is None else (args.img_size[0] if len(args.img_size) == 1 else args.img_size)
    letterbox = letterbox_from_config(cfg, int(getattr(model, "size_divisor", 32)), img_size)
    meta = build_metadata(model, letterbox, loaded.class_names, with_nms=args.with_nms,
                          dynamic_batch=args.dynamic_batch,
                          source={"config": loaded.config_source, "checkpoint": str(ckpt)})
    if openvino:
        import tempfile

        from detkit.deploy.calibration import calibration_batches
        from detkit.deploy.openvino_runtime import export_openvino

        calib = calibration_batches(cfg, letterbox, args.calib_images) if args.int8 else None
        accuracy = None if args.int8_max_drop is None else _accuracy_control(args, cfg, letterbox, model)
        with tempfile.TemporaryDirectory() as tmp:
            graph = export_onnx(model, Path(tmp) / (out.stem + ".onnx"), meta, opset=args.opset)
            export_openvino(graph, out, calibration=calib, calibration_size=args.calib_images, accuracy=accuracy,
                            quantize_head=args.int8_head)
        if calib is not None:
            print(f"int8 (NNCF) calibrated on {len(calib)} training images")
        if calib is not None and accuracy is None:
            print("plain post-training quantization; --int8-max-drop 1 puts the layers that cost most AP back in "
                  "float until the drop on held-out training images is at most 1 point (slower)")
        if accuracy is not None:
            drop = 100 * (accuracy.reference - accuracy.quantized)
            print(f"accuracy control on {accuracy.size} held-out training images: AP {100 * accuracy.reference:.2f} "
                  f"float, {100 * accuracy.quantized:.2f} int8 (drop {drop:.2f}, limit {args.int8_max_drop:g}); "
                  f"{len(accuracy.float_convs)} of {accuracy.convs} convolutions in float"
                  + ("" if args.int8_head else " (the head's prediction convs always)"))
    else:
        export_onnx(model, out, meta, opset=args.opset)
    h, w = meta.input_size
    outputs = ("boxes (B, 4, N), scores (B, C, N) (channel-first)" if meta.channels_first
               else ", ".join(meta.output_names))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB): input images (B, 3, {h}, {w}), "
          f"batch {'dynamic' if meta.dynamic_batch else 1}, outputs {outputs}, opset {args.opset}")
    if meta.with_nms and not meta.postprocess["nms"]:
        print(f"no NonMaxSuppression op: the head is one-to-one (nms=False); the graph keeps the top "
              f"{meta.postprocess['max_per_img']} (prior, class) scores above {meta.postprocess['score_thr']}")
    if not args.no_verify:
        diffs = verify(model, out, args.tolerance)
        print("parity with PyTorch (max |diff|): " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
        if args.int8:
            print(f"int8 outputs are not held to --tolerance; the AP they cost: tools/test.py CONFIG {out}")
        elif any(v > args.tolerance for v in diffs.values()):
            backend = "OpenVINO" if openvino else "ONNX Runtime"
            raise RuntimeError(f"{backend} outputs differ from PyTorch by more than {args.tolerance}: {diffs}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: run(parse_args(argv)), failures=(RuntimeError,))  # 1: export or parity check failed


if __name__ == "__main__":
    sys.exit(main())
