"""Convert another toolkit's trained detector into a detkit checkpoint.

    python tools/convert_weights.py ultralytics SRC.pt DST.pth [--config CONFIG]
        [--cfg-options KEY=VALUE ...] [--overwrite] [--unsafe-load]

``ultralytics``: an Ultralytics YOLOv8, YOLO11 or YOLO26 detection checkpoint (n/s/m/l/x, as
Ultralytics saves it: a pickled ``DetectionModel`` under ``ema`` or ``model``, usually fp16). Its EMA
weights are used when present, else ``model``. The family and scale are read from the weights and pick
``configs/yolov8{scale}_tal.py``, ``configs/yolo11{scale}_tal.py`` or ``configs/yolo26{scale}.py``
unless ``--config`` names another (YOLO26 is evaluated from its one-to-one branch, without NMS). The
result holds only tensors and plain values (it loads with ``torch.load(weights_only=True)``):
``{"model": state_dict (fp32), "config": the merged config as a trainer stores it, "meta": {config,
cfg_options, family, scale, num_classes, class_names, reg_max, source, source_entry, ultralytics_version}}``,
so ``tools/infer.py``, ``tools/export.py`` and ``load_checkpoint_model`` take it with no config, as a
trained checkpoint. Before it is written it is loaded, strictly, into the config's model. A class count
other than 80 is converted as it is; the command to evaluate it (printed) adds
``--cfg-options model.head.num_classes=K``.

Unpickling an Ultralytics checkpoint needs ultralytics importable (``.venv-bench``; never a detkit
dependency). It is read with Ultralytics' restricted loader (``weights_only=True`` with its
allow-list of model classes, so the file runs no code); ``--unsafe-load`` unpickles without that
restriction, for a file you trust that the allow-list refuses.

Exit status 2, with one line on stderr: ultralytics missing, a file that is not such a checkpoint
(a segmentation / pose / OBB / classification model, another layout such as YOLOv10 or YOLOv5u, a
corrupt file), an existing DST without ``--overwrite``, weights that do not fit ``--config``.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from detkit.cli import ArgumentParser, run_cli
from detkit.config_files import find_config
from detkit.errors import CheckpointError, DetkitError, OutputError
from detkit.models.convert.ultralytics import (
    DEFAULT_NUM_CLASSES,
    ConversionError,
    ConvertedWeights,
    UltralyticsModel,
    convert_ultralytics,
    required_overrides,
    ultralytics_config,
)

FORMATS = ("ultralytics",)
# Ultralytics model classes of other tasks (all subclasses of DetectionModel), as users call them.
OTHER_TASKS = {
    "SegmentationModel": "a segmentation model", "PoseModel": "a pose model",
    "OBBModel": "an oriented-box (OBB) model", "ClassificationModel": "a classification model",
    "WorldModel": "a YOLO-World model", "YOLOEModel": "a YOLOE model", "YOLOESegModel": "a YOLOE model",
    "RTDETRDetectionModel": "an RT-DETR model",
}


class UltralyticsMissing(DetkitError, ValueError):
    """ultralytics is not importable in this Python (exit status 2)."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("format", choices=FORMATS, help="the source toolkit")
    p.add_argument("src", help="the checkpoint to convert (Ultralytics: a .pt file)")
    p.add_argument("dst", help="the detkit checkpoint to write (.pth)")
    p.add_argument("--config", default=None,
                   help="detkit config of the weights (default: by their family and scale, e.g. "
                        "configs/yolo11s_tal.py, configs/yolo26n.py)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides, as tools/test.py takes them (the class count is added when not 80)")
    p.add_argument("--overwrite", action="store_true", help="replace DST when it exists")
    p.add_argument("--unsafe-load", action="store_true",
                   help="unpickle SRC without Ultralytics' allow-list (runs code in the file: trusted files only)")
    return p.parse_args(argv)


def load_ultralytics(path: Path, unsafe: bool = False) -> Any:
    """Unpickle an Ultralytics checkpoint with Ultralytics' own loader (restricted unless ``unsafe``).

    Raises:
        UltralyticsMissing: ultralytics cannot be imported.
        ConversionError: the file cannot be read as an Ultralytics checkpoint (one line, why).
    """
    try:
        from ultralytics.nn.tasks import torch_safe_load
    except ImportError as e:
        raise UltralyticsMissing(
            f"ultralytics is not installed in this Python ({sys.executable}): it is needed only to unpickle "
            f"{path}; run the converter with .venv-bench/bin/python (make bench-setup) or pip install ultralytics "
            f"there ({type(e).__name__}: {e})") from e
    if path.suffix != ".pt":
        raise ConversionError(f"{path}: Ultralytics checkpoints are .pt files (its loader refuses "
                              f"{path.suffix or 'no suffix'}); rename or link it to a .pt name")
    if not zipfile.is_zipfile(path):
        raise ConversionError(f"{path}: not a PyTorch checkpoint, or a truncated one (torch.save writes a zip "
                              "archive; this file is not a complete one)")
    try:
        ckpt, _ = torch_safe_load(str(path), safe_only=not unsafe)
    except Exception as e:  # any failure to unpickle the user's file is that file's problem: one line
        reason = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        reason = reason.replace("ERROR ❌️", "").strip()
        hint = ("; if you trust this file, --unsafe-load unpickles it without Ultralytics' allow-list"
                if not unsafe and "outside the supported" in reason else "")
        raise ConversionError(f"{path}: cannot be read as an Ultralytics checkpoint ({type(e).__name__}: "
                              f"{reason}){hint}") from e
    return ckpt


def extract_model(ckpt: Any, path: Path) -> UltralyticsModel:
    """The model of an unpickled Ultralytics checkpoint: ``ema`` when present and not None, else ``model``.

    Raises:
        ConversionError: not a checkpoint dict, no model in it, or a model of another task.
    """
    if not isinstance(ckpt, Mapping):
        raise ConversionError(f"{path}: not an Ultralytics checkpoint (a {type(ckpt).__name__}, expected a dict "
                              "with 'model' / 'ema')")
    entry = "ema" if ckpt.get("ema") is not None else "model"
    model = ckpt.get(entry)
    if model is None:
        keys = ", ".join(map(str, list(ckpt)[:8]))
        raise ConversionError(f"{path}: no model under 'ema' or 'model' (keys: {keys})")
    if not isinstance(model, nn.Module):
        raise ConversionError(f"{path}: '{entry}' holds a {type(model).__name__}, not a pickled Ultralytics model")
    kind = type(model).__name__
    if kind != "DetectionModel":
        what = OTHER_TASKS.get(kind, f"a {kind}")
        raise ConversionError(f"{path}: {what}, not a detection model (DetectionModel); only YOLOv8, YOLO11 "
                              "and YOLO26 detection checkpoints convert")
    yaml = getattr(model, "yaml", None)
    yaml_file = yaml.get("yaml_file") if isinstance(yaml, Mapping) else None
    version = ckpt.get("version")
    return UltralyticsModel(state_dict=model.state_dict(), names=getattr(model, "names", None), entry=entry,
                            version=str(version) if version is not None else None,
                            yaml_file=str(yaml_file) if yaml_file else None)


def check_paths(src: Path, dst: Path, overwrite: bool) -> None:
    """CheckpointError for a missing SRC; OutputError for DST = SRC, an existing DST without ``overwrite``,
    an unwritable DST."""
    from detkit.engine.output_paths import check_output_file

    if not src.is_file():
        raise CheckpointError(f"{src}: no such file")
    check_output_file(dst, "DST")
    if dst.exists() and dst.resolve() == src.resolve():
        raise OutputError(f"DST {dst} is SRC: write the converted weights to another file")
    if dst.exists() and not overwrite:
        raise OutputError(f"DST {dst} exists; pass --overwrite to replace it")


def write_checkpoint(source: UltralyticsModel, weights: ConvertedWeights, src: Path, dst: Path,
                     config: str, cfg_options: Sequence[str], config_path: str | None = None) -> int:
    """Load ``weights`` strictly into ``config``'s model from a temporary file, then move it to ``dst``.

    ``config`` is the name recorded in the checkpoint; ``config_path`` (default ``config``) the file read.
    Returns the model's parameter count.

    Raises:
        ConversionError: the weights do not fill the config's model (shapes, missing or extra tensors).
    """
    from detkit.config import format_config, instantiate, load_config
    from detkit.engine.checkpoint import atomic_save
    from detkit.engine.weights import load_weights, weights_differences

    cfg = load_config(config_path or config, cfg_options)
    model = instantiate(cfg.model, "model")
    differences = weights_differences(model.state_dict(), weights.state_dict)
    if differences:
        raise ConversionError(f"the {weights.model_name} weights of {src} do not fit {config}: "
                              + "; ".join(differences))
    if isinstance(cfg.get("data"), dict):  # the stored config names the weights' classes, as a trainer's does
        cfg.data.update(num_classes=weights.num_classes, class_names=list(weights.class_names))
    ckpt = {
        "model": weights.state_dict,
        "config": format_config(cfg),  # so infer / export / test need no config, as with a trained checkpoint
        "meta": {
            "config": config, "cfg_options": list(cfg_options), "family": weights.family, "scale": weights.scale,
            "num_classes": weights.num_classes, "class_names": list(weights.class_names),
            "reg_max": weights.reg_max, "source": str(src), "source_format": "ultralytics",
            "source_entry": source.entry, "source_dtype": str(weights.source_dtype).removeprefix("torch."),
            "ultralytics_version": source.version, "yaml_file": source.yaml_file,
        },
    }
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.converting")
    try:
        atomic_save(ckpt, tmp)
        load_weights(model, tmp, strict=True)  # as tools/test.py loads it: weights_only=True, every tensor
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return sum(p.numel() for p in model.parameters())


def run(args: argparse.Namespace) -> Path:
    from detkit.engine.output_paths import check_not_input

    src, dst = Path(args.src), Path(args.dst)
    check_paths(src, dst, args.overwrite)
    check_not_input(dst, [src, args.config], "DST")  # nor the config (with --overwrite), through symlinks too
    source = extract_model(load_ultralytics(src, unsafe=args.unsafe_load), src)
    return convert(source, src, dst, args.config, args.cfg_options)


def convert(source: UltralyticsModel, src: Path, dst: Path, config: str | None,
            cfg_options: Sequence[str] = ()) -> Path:
    """Convert an extracted Ultralytics model, check it against the config and write ``dst``
    (everything after unpickling; needs no ultralytics)."""
    try:
        weights = convert_ultralytics(source.state_dict, source.names)
    except ConversionError as e:
        raise ConversionError(f"{src}: {e}") from e
    config_path = None
    if config is None:
        config = ultralytics_config(weights.family, weights.scale)
        config_path = find_config(config)  # the checkout's configs/, or the installed package's
    needed = required_overrides(weights)
    options = needed + [o for o in cfg_options if o not in needed]
    params = write_checkpoint(source, weights, src, dst, config, options, config_path)
    saved = f"ultralytics {source.version}" if source.version else "ultralytics"
    print(f"{weights.model_name} ({source.yaml_file or 'yaml not recorded'}, saved by {saved}): "
          f"'{source.entry}' weights, {str(weights.source_dtype).removeprefix('torch.')} -> float32, "
          f"{weights.num_classes} classes, {params:,} parameters")
    print(f"wrote {dst} (loads into {config} with weights_only=True)")
    if weights.num_classes != DEFAULT_NUM_CLASSES:
        print(f"{weights.num_classes} classes: its class names are in the checkpoint's meta.class_names; "
              "evaluate on a dataset with these classes")
    hint = f" --cfg-options {' '.join(options)}" if options else ""
    name = Path(config).name if config_path else config  # a packaged config by name, from any folder
    print(f"evaluate: detkit test {name} {dst}{hint}   (detect: detkit infer {dst} IMAGES; the config is inside)")
    return dst


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
