"""Evaluate a checkpoint on the config's validation set (COCO box AP).

    python tools/test.py configs/yolov4_atss.py work_dirs/yolov4_atss/best.pth [--out results.json]
    python tools/test.py configs/yolov4_atss.py best.onnx | best.xml [--precision fp32|bf16]   # an exported model
        [--cfg-options ...] [--device cuda] [--batch 16] [--backend auto|pycocotools|faster] [--pr-curve pr.png]
        [--analysis DIR [--analysis-score-thr 0.3]] [--data PATH [--img-size N]]

``--data`` evaluates on your own data's val split (as ``tools/train.py --data``: docs/custom_data.md),
at the image size stored in the checkpoint unless ``--img-size`` says otherwise.

An exported model (``.onnx``: ONNX Runtime, ``.xml``: OpenVINO, int8 included; ``tools/export.py``) is
evaluated through its runtime at its exported input size (the config's val size must give it), with
the class names stored in it; ``--precision bf16`` runs an OpenVINO model's float layers in bf16;
``--no-spin`` makes ONNX Runtime's idle threads sleep (faster on a machine busy with other work).
A checkpoint is evaluated fused and, on the CPU, in channels_last (``--no-fuse``: the model as trained).

Prints the standard 12-line COCO summary and a per-class AP table. Uses the checkpoint's EMA
weights when it has them. Runs under torchrun too (each rank predicts a shard; rank 0 evaluates).

``--analysis DIR`` also writes the error analysis (:mod:`detkit.evaluation.errors`): a confusion
matrix (classes + background) and GT outcomes / false detections by COCO size (missed,
mislocalised, wrong class, duplicate, background) at ``--analysis-score-thr`` (default 0.3), as
``DIR/analysis.md``, ``DIR/confusion_matrix.png`` and ``DIR/errors_by_size.png``.

Refused before any work, exit status 2: a checkpoint that does not fill the config's model (another
class count, width or head: the message lists the tensors and shapes that differ), a checkpoint whose
class names (stored in it) are not the val data's in label order (:func:`detkit.data.classes.check_class_names`:
the same names in another order, other names, another count), and ``--out`` /
``--pr-curve`` / ``--analysis`` paths that cannot be written (a folder, under a file, no
permission, nowhere files can be created such as ``/proc``) or that would replace an input (the
config, the checkpoint, the val annotation json, or inside a folder the val set names; symlinks
resolved). With no detections at all, ``--pr-curve`` writes nothing and says so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from detkit.argtypes import fraction, positive_int
from detkit.cli import ArgumentParser, run_cli
from detkit.config import instantiate
from detkit.data.adopt import add_data_arguments, load_data_config


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--out", default=None, help="write the COCO results json here")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    add_data_arguments(p)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="images per batch (default data.val.batch_size, else data.train.batch_size, else 16)")
    p.add_argument("--backend", default="auto", help="COCO evaluation backend: auto | pycocotools | faster")
    p.add_argument("--pr-curve", default=None, help="write precision-recall curves to this PNG")
    p.add_argument("--analysis", default=None, metavar="DIR",
                   help="write a confusion matrix and errors by object size (markdown + PNG) to this folder")
    p.add_argument("--analysis-score-thr", type=fraction, default=0.3,
                   help="detections scoring below this are left out of --analysis (default 0.3)")
    p.add_argument("--no-fuse", action="store_true",
                   help="evaluate the model as trained (default: Conv + BatchNorm fused, same outputs, faster)")
    p.add_argument("--precision", default="fp32", help="fp32 | bf16: an OpenVINO (.xml) model's inference precision")
    p.add_argument("--threads", type=positive_int, default=None, help="an exported model's runtime threads")
    p.add_argument("--no-spin", action="store_true",
                   help="ONNX Runtime (.onnx): idle threads sleep instead of spin-waiting (faster on a busy machine)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, float]:
    from detkit.data.classes import check_class_names
    from detkit.engine.checkpoint import load_checkpoint
    from detkit.engine.checkpoint_config import checkpoint_class_names
    from detkit.engine.distributed import init_distributed, is_main_process
    from detkit.engine.evaluate import build_val_data, evaluate
    from detkit.engine.logging import setup_logger
    from detkit.engine.output_paths import check_not_input, check_output_dir, check_output_file, config_input_paths
    from detkit.engine.train_utils import resolve_device
    from detkit.engine.weights import load_weights
    from detkit.evaluation import write_coco_results
    from detkit.viz import plot_pr_curves

    outputs = (("--out", args.out), ("--pr-curve", args.pr_curve), ("--analysis", args.analysis))
    for flag, path in outputs:  # never the config or the checkpoint
        if path:
            check_not_input(path, [args.config, args.checkpoint], flag)
    for flag, path in (("--out", args.out), ("--pr-curve", args.pr_curve)):
        if path:
            check_output_file(path, flag)
    if args.analysis:
        check_output_dir(args.analysis, "--analysis")
    from detkit.deploy.runtimes import exported_backend, open_exported
    from detkit.errors import UsageError

    exported = exported_backend(args.checkpoint)
    if args.precision != "fp32" and exported != "openvino":
        raise UsageError(f"--precision {args.precision}: only an OpenVINO (.xml) model runs bf16")
    if args.no_spin and exported != "onnxruntime":
        raise UsageError("--no-spin applies to an ONNX Runtime (.onnx) model")
    checkpoint = None if exported else load_checkpoint(args.checkpoint)
    trained_size = (checkpoint.get("meta") or {}).get("img_size") if isinstance(checkpoint, dict) else None
    if args.data and args.img_size is None and isinstance(trained_size, int):
        args.img_size = trained_size  # the data is new to the config: evaluate at the size the model learned
        print(f"--img-size {trained_size}: the size {args.checkpoint} was trained at (its meta)", flush=True)
    cfg = load_data_config(args.config, args.cfg_options, args)
    # --data itself, then the annotation files and image (and derived label) folders the val set reads
    data_inputs = [*config_input_paths(args.data), *config_input_paths((cfg.get("data") or {}).get("val"))]
    for flag, path in outputs:
        if path:
            check_not_input(path, data_inputs, flag)
    device = resolve_device(args.device)
    rank, _, local_rank = init_distributed(device.type)
    setup_logger(None, rank)
    if device.type == "cuda":
        device = __import__("torch").device("cuda", local_rank)
    if exported:
        from detkit.deploy.calibration import ExportedEvalModel

        model = ExportedEvalModel(open_exported(args.checkpoint, precision=args.precision, threads=args.threads,
                                                 spin=not args.no_spin))
    else:
        model = instantiate(cfg.model)
        load_weights(model, args.checkpoint, strict=True)  # a checkpoint of another model is refused
        model.to(device).eval()
    val = build_val_data(cfg, backend=args.backend)
    # the names the checkpoint was trained with, label by label, before any work: other names are refused
    if exported or checkpoint is None:
        ckpt_names = model.runtime.class_names
    else:
        ckpt_names = checkpoint_class_names(checkpoint, args.checkpoint, getattr(model.head, "num_classes", None))
    check_class_names(ckpt_names, getattr(val.dataset, "class_names", None), f"{args.checkpoint} on data.val")
    run = evaluate(cfg, model, device, val=val, batch_size=args.batch, progress=not args.no_progress,
                   fuse=not (args.no_fuse or exported))
    metrics, results, evaluator = run.metrics, run.results, run.evaluator
    if is_main_process():
        assert evaluator is not None  # the main process evaluates
        print(evaluator.summary())
        print()
        print(evaluator.per_class_table())
        if metrics.get("nonfinite_dropped"):
            print(f"\nwarning: {int(metrics['nonfinite_dropped'])} detection(s) with a NaN/inf box or score were "
                  "left out of the evaluation and of --out: the checkpoint's outputs are broken", file=sys.stderr)
        if args.out:
            write_coco_results(results, args.out)
            print(f"\n{len(results)} detections written to {args.out}")
        precision = evaluator.precision
        if args.pr_curve and precision is None:
            print(f"warning: --pr-curve {args.pr_curve} not written: the model made no detections", file=sys.stderr)
        elif args.pr_curve and precision is not None:
            plot_pr_curves(precision, args.pr_curve, evaluator.class_names)
            print(f"precision-recall curves written to {args.pr_curve}")
        if args.analysis:
            write_analysis(evaluator, results, args.analysis, args.analysis_score_thr)
    return metrics


def write_analysis(evaluator, results, out_dir: str, score_thr: float) -> None:
    """``--analysis``: the confusion matrix and errors by size, printed and written to ``out_dir``."""
    from detkit.evaluation.errors import analyse_errors
    from detkit.io import atomic_write_text

    report = analyse_errors(evaluator.gt.dataset, results, score_thr=score_thr,
                            class_names=evaluator.class_names, image_ids=evaluator.image_ids)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "analysis.md", report.to_markdown())
    report.plot(out)
    print(f"\n{report.to_markdown()}\nerror analysis written to {out}/ (analysis.md, confusion_matrix.png, "
          f"errors_by_size.png)")


def main(argv: Sequence[str] | None = None) -> int:
    from detkit.engine.distributed import cleanup_distributed

    try:
        return run_cli(lambda: run(parse_args(argv)))
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    from detkit.engine.distributed import exit_process

    exit_process(main())
