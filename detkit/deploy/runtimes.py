"""An exported model opened by its suffix: ``.onnx`` in ONNX Runtime, ``.xml`` (OpenVINO IR) in OpenVINO.

    runtime = open_exported("best_int8.xml", precision="bf16", threads=2)
    dets = runtime.predict(batch)          # as Detector.predict, original-image pixels
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detkit.errors import CheckpointError

__all__ = ["EXPORTED_SUFFIXES", "exported_backend", "open_exported"]

# suffix -> the backend that runs it
EXPORTED_SUFFIXES = {".onnx": "onnxruntime", ".xml": "openvino"}


def exported_backend(path: str | os.PathLike) -> str | None:
    """``"onnxruntime"`` for ``.onnx``, ``"openvino"`` for ``.xml``, None for anything else (a checkpoint)."""
    return EXPORTED_SUFFIXES.get(Path(path).suffix.lower())


def open_exported(path: str | os.PathLike, *, backend: str | None = None, precision: str = "fp32",
                  threads: int | None = None, providers: Sequence[str] | None = None, spin: bool = True) -> Any:
    """:class:`~detkit.deploy.onnx_runtime.OnnxDetector` or
    :class:`~detkit.deploy.openvino_runtime.OpenVinoDetector` for ``path``.

    Args:
        path: an ``.onnx`` or ``.xml`` written by ``tools/export.py``.
        backend: ``"onnxruntime"`` or ``"openvino"`` (default: from the suffix).
        precision: "fp32" or "bf16" (OpenVINO only; ONNX Runtime runs the graph as exported, fp32).
        threads: intra-op threads (default: the runtime's choice).
        providers: ONNX Runtime execution providers.
        spin: ONNX Runtime's idle threads spin-wait (its default); False: they sleep, faster on a busy
            machine (:class:`~detkit.deploy.onnx_runtime.OnnxDetector`). ONNX Runtime only.

    Raises:
        CheckpointError: a suffix neither backend reads.
        ConfigError: bf16 asked of ONNX Runtime, or of a CPU without bf16; ``spin=False`` asked of OpenVINO.
    """
    from detkit.errors import ConfigError

    kind = backend or exported_backend(path)
    if kind == "openvino":
        if not spin:
            raise ConfigError("spin=False (--no-spin) is an ONNX Runtime option (a .onnx model); OpenVINO has "
                              "no such switch")
        from detkit.deploy.openvino_runtime import OpenVinoDetector

        return OpenVinoDetector(path, precision=precision, threads=threads)
    if kind == "onnxruntime":
        if precision != "fp32":
            raise ConfigError(f"precision {precision}: ONNX Runtime runs the exported fp32 graph; bf16 is an "
                              "OpenVINO option (export with --format openvino)")
        from detkit.deploy.onnx_runtime import OnnxDetector

        return OnnxDetector(path, providers=providers, threads=threads, spin=spin)
    raise CheckpointError(f"{path}: not an exported model ({', '.join(EXPORTED_SUFFIXES)})")
