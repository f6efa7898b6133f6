"""One front for inference whatever the backend: a PyTorch checkpoint or an exported ONNX model.

``load_predictor(...)`` returns a :class:`Predictor`; ``predictor(frames)`` letterboxes the frames
(:func:`~detkit.deploy.preprocess.letterbox_images`), runs the model's ``predict(batch)`` and
returns detections in original-image pixels. Both backends share pre- and post-processing, so
their detections agree (see ``docs/deployment.md``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detkit.deploy.preprocess import LetterboxSettings, letterbox_from_config, letterbox_images
from detkit.errors import ConfigError

__all__ = ["BACKENDS", "Predictor", "load_onnx_predictor", "load_predictor", "load_torch_predictor",
           "resolve_backend"]

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
ONNX_SUFFIXES = (".onnx",)


def resolve_backend(model_path: str | os.PathLike, backend: str = "auto") -> str:
    """``"torch"``, ``"onnxruntime"`` or ``"openvino"``: ``backend`` when given, else from the file suffix
    (``.onnx``: ONNX Runtime, ``.xml``: OpenVINO, anything else: a PyTorch checkpoint).

    Args:
        model_path: a checkpoint or an ``.onnx`` file (only its suffix is read).
        backend: ``"auto"``, ``"torch"`` or ``"onnxruntime"``.

    Raises:
        ValueError: an unknown ``backend``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    from detkit.deploy.runtimes import exported_backend

    return exported_backend(model_path) or "torch"


@dataclass
class Predictor:
    """A model with ``predict(batch)``, the letterbox it expects and its class names.

    Attributes:
        model: ``detkit.models.Detector`` (eval mode) or :class:`~detkit.deploy.onnx_runtime.OnnxDetector`.
        letterbox: how frames are fitted to the network input.
        class_names: names per class index, or None.
        backend: ``"torch"``, ``"onnxruntime"`` or ``"openvino"``.
        device: where the batch goes (CPU for ONNX Runtime).
        channels_last: the PyTorch model runs in channels_last, so the letterboxed images go to it in that
            layout too (:mod:`detkit.models.memory_format`).
    """

    model: Any
    letterbox: LetterboxSettings
    class_names: list[str] | None
    backend: str
    device: torch.device
    channels_last: bool = False

    @torch.no_grad()
    def __call__(self, frames: Sequence[np.ndarray], *, bgr: bool = True, **overrides: Any) -> list[dict[str, Tensor]]:
        """Detections for ``frames`` (``(H, W, 3) uint8``, BGR unless ``bgr=False``).

        Args:
            frames: images of any sizes, each ``np.ndarray (H, W, 3)`` uint8 (``cv2.imread``'s output).
            bgr: False for RGB frames.
            **overrides: post-processing settings for this call (``score_thr=0.3``, ``max_per_img``, ...).

        Returns:
            ``[dict(boxes (K, 4) xyxy original pixels, scores (K,), labels (K,))]`` on the CPU.
        """
        batch = letterbox_images(frames, self.letterbox, bgr=bgr)
        if self.backend == "torch":
            batch = {k: v.to(self.device) for k, v in batch.items()}
            if self.channels_last:
                from detkit.models.memory_format import images_to_channels_last

                batch["images"] = images_to_channels_last(batch["images"])
        dets = self.model.predict(batch, **overrides)
        return [{k: v.cpu() for k, v in det.items()} for det in dets]


def load_torch_predictor(
    config: str | os.PathLike | None,
    checkpoint: str | os.PathLike,
    *,
    device: str = "auto",
    img_size: int | Sequence[int] | None = None,
    cfg_options: Sequence[str] = (),
    compile_mode: str | None = None,
    fuse: bool = True,
    channels_last: bool = True,
) -> Predictor:
    """A checkpoint's model with its weights (EMA when present), built from ``config`` or, when it is
    None, from the config stored in the checkpoint; labelled with the checkpoint's class names
    (:func:`detkit.engine.checkpoint_config.load_checkpoint_model`); Conv + BatchNorm fused unless ``fuse``
    is False (:func:`detkit.models.fuse.fused_copy`); on the CPU in channels_last (model and input) unless
    ``channels_last`` is False (:mod:`detkit.models.memory_format`: same outputs within fp32 rounding,
    0.74-0.90x the time); optionally compiled (``torch.compile`` with ``freeze=True``: see
    :func:`detkit.engine.compile.maybe_compile`)."""
    from detkit.engine.checkpoint_config import load_checkpoint_model
    from detkit.engine.compile import maybe_compile
    from detkit.engine.train_utils import resolve_device
    from detkit.models.fuse import fused_copy
    from detkit.models.memory_format import to_inference_memory_format, wants_channels_last

    dev = resolve_device(device)
    loaded = load_checkpoint_model(checkpoint, config, cfg_options)
    model = loaded.detector.to(dev).eval()
    if fuse:
        model = fused_copy(model)
    nhwc = channels_last and wants_channels_last(dev)
    to_inference_memory_format(model, dev, nhwc)  # a model loaded for inference only: converted in place
    maybe_compile(model, compile_mode, freeze=True)  # an inference-only model: fold BN, prepack weights
    letterbox = letterbox_from_config(loaded.cfg, int(getattr(model, "size_divisor", 32)), img_size)
    return Predictor(model, letterbox, loaded.class_names, "torch", dev, channels_last=nhwc)


def load_onnx_predictor(path: str | os.PathLike, *, device: str = "cpu", threads: int | None = None,
                        img_size: int | Sequence[int] | None = None, backend: str = "onnxruntime",
                        precision: str = "fp32", spin: bool = True) -> Predictor:
    """An exported model in ONNX Runtime (or OpenVINO: ``backend="openvino"``, ``precision`` fp32 or
    bf16); its metadata gives the letterbox and class names. ``spin=False``: ONNX Runtime's idle threads
    sleep instead of spin-waiting (:class:`~detkit.deploy.onnx_runtime.OnnxDetector`; faster on a busy machine).

    ``img_size`` is accepted only when it equals the exported input size (the graph is fixed-size).
    """
    from detkit.deploy.onnx_runtime import OnnxDetector

    providers = ["CPUExecutionProvider"]
    if backend == "openvino" and device not in ("auto", "cpu"):
        raise ConfigError(f"device {device!r}: the OpenVINO backend runs on the CPU here; use device cpu")
    if device.startswith("cuda"):
        from detkit.extras import require

        ort = require("onnxruntime", "running .onnx models")
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError(f"device {device!r}: this onnxruntime has no CUDAExecutionProvider "
                              f"(available: {ort.get_available_providers()}); use device cpu")
        providers.insert(0, "CUDAExecutionProvider")
    elif device not in ("auto", "cpu"):
        raise ValueError(f"unknown device {device!r}; accepted: auto, cpu, cuda")
    if backend == "openvino":
        from detkit.deploy.runtimes import open_exported

        model = open_exported(path, backend="openvino", precision=precision, threads=threads, spin=spin)
    else:
        model = OnnxDetector(path, providers=providers, threads=threads, spin=spin)
    size = model.metadata.input_size
    if img_size is not None:
        wanted = (img_size, img_size) if isinstance(img_size, int) else tuple(int(v) for v in img_size)
        if -(-wanted[0] // model.size_divisor) * model.size_divisor != size[0] or \
                -(-wanted[1] // model.size_divisor) * model.size_divisor != size[1]:
            raise ConfigError(f"{Path(path).name} was exported for input {size[0]}x{size[1]} (HxW); "
                              f"an input size of {img_size} needs a new export")
    return Predictor(model, model.metadata.letterbox, model.class_names or None, backend, torch.device("cpu"))


def load_predictor(
    model_path: str | os.PathLike,
    config: str | os.PathLike | None = None,
    *,
    backend: str = "auto",
    device: str = "auto",
    img_size: int | Sequence[int] | None = None,
    cfg_options: Sequence[str] = (),
    compile_mode: str | None = None,
    threads: int | None = None,
    fuse: bool = True,
    precision: str = "fp32",
    spin: bool = True,
    channels_last: bool = True,
) -> Predictor:
    """A :class:`Predictor` for a checkpoint (with its ``config``, or the one stored inside it) or an
    ``.onnx`` model.

    Args:
        model_path: a detkit checkpoint (``.pth``) or an exported ``.onnx`` file.
        config: the model's config for a checkpoint (None: the config the trainer stored in it);
            unused for ``.onnx``.
        backend: ``"auto"`` (from the suffix), ``"torch"``, ``"onnxruntime"`` or ``"openvino"`` (``.xml``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        img_size: network input size (an int or ``(H, W)``) instead of the config's; for ``.onnx`` it
            must equal the exported size.
        cfg_options: config overrides (PyTorch backend only), as ``--cfg-options``.
        compile_mode: ``torch.compile`` mode for the PyTorch backend (None: eager).
        threads: ONNX Runtime / OpenVINO intra-op threads (None: its default).
        fuse: fold Conv + BatchNorm of the PyTorch model (:func:`detkit.models.fuse.fused_copy`); False: the
            model as trained.
        precision: ``"fp32"`` or ``"bf16"`` (OpenVINO only: its ``INFERENCE_PRECISION_HINT``).
        spin: ONNX Runtime only: its idle threads spin-wait (default, fastest on a quiet machine); False: they
            sleep (faster on a machine busy with other work).
        channels_last: PyTorch backend on the CPU: model and input in channels_last (default; same outputs
            within fp32 rounding, faster); False: the contiguous layout.

    Returns:
        A :class:`Predictor`: ``predictor([cv2.imread("a.jpg")])`` gives the detections.

    Raises:
        ValueError: an unknown backend or device, or an option the chosen backend does not have.
        ConfigError: an ``img_size`` an ``.onnx`` model cannot take; CUDA asked of an onnxruntime without it.
        CheckpointError: a checkpoint that is missing, corrupt or unsafe to load.
    """
    kind = resolve_backend(model_path, backend)
    if precision != "fp32" and kind != "openvino":
        raise ValueError(f"precision {precision!r} applies to the OpenVINO backend (a .xml model); {kind} runs fp32")
    if not spin and kind != "onnxruntime":
        raise ValueError(f"spin=False applies to the ONNX Runtime backend (a .onnx model), not to {kind}")
    if kind != "torch":
        if compile_mode not in (None, "none"):
            raise ValueError(f"compile_mode applies to the PyTorch backend, not to {kind}")
        if cfg_options:
            raise ValueError("cfg_options apply to the PyTorch backend; an exported model carries its settings")
        return load_onnx_predictor(model_path, device=device, threads=threads, img_size=img_size, backend=kind,
                                   precision=precision, spin=spin)
    return load_torch_predictor(config, model_path, device=device, img_size=img_size, cfg_options=cfg_options,
                                compile_mode=compile_mode, fuse=fuse, channels_last=channels_last)
