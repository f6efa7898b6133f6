"""OpenVINO backend: an exported detkit ONNX graph converted to OpenVINO IR (``.xml`` + ``.bin``),
optionally quantized to int8 by NNCF, run through the ONNX Runtime backend's pre/post-processing.

    xml = export_openvino("best.onnx", "best.xml")                            # fp32 IR, metadata kept
    xml = export_openvino("best.onnx", "best_int8.xml", calibration=batches)  # int8 (NNCF PTQ)
    dets = OpenVinoDetector(xml, precision="bf16").predict(batch)             # as OnnxDetector.predict

The IR carries the ONNX model's detkit metadata (:class:`~detkit.deploy.metadata.DeployMetadata`)
in its ``rt_info`` under ``detkit/<key>`` (the same JSON strings as the ONNX ``metadata_props``).
:class:`OpenVinoDetector` is an :class:`~detkit.deploy.onnx_runtime.OnnxDetector` whose session is
an OpenVINO compiled model: letterboxing, the shape checks, decoding and NMS are that class's.

Precision: OpenVINO's CPU plugin runs in bf16 by default on a CPU with bf16 instructions; detkit
asks for fp32 unless ``precision="bf16"`` (``INFERENCE_PRECISION_HINT``). An int8 IR runs its
quantized convolutions in int8 whatever the hint; the hint applies to the layers left in float.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detkit.deploy.metadata import DeployMetadata
from detkit.deploy.onnx_runtime import OnnxDetector
from detkit.errors import CheckpointError, ConfigError

__all__ = ["OPENVINO_PRECISIONS", "AccuracyControl", "OpenVinoDetector", "check_precision", "decode_ignored_scope",
           "export_openvino", "float_convolutions", "openvino_metadata"]

OPENVINO_PRECISIONS = ("fp32", "bf16")
_HINTS = {"fp32": "f32", "bf16": "bf16"}
_RT_KEY = "detkit"
_PURPOSE = "the OpenVINO backend"
_FP32 = {"INFERENCE_PRECISION_HINT": "f32"}


def _openvino() -> Any:
    from detkit.extras import require

    return require("openvino", _PURPOSE)


def check_precision(precision: str, capabilities: Sequence[str] | None = None) -> str:
    """The OpenVINO ``INFERENCE_PRECISION_HINT`` for ``precision`` ("fp32" or "bf16").

    Args:
        precision: "fp32" or "bf16".
        capabilities: the CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (default: asked of OpenVINO).

    Raises:
        ConfigError: an unknown precision, or bf16 on a CPU without bf16 instructions.
    """
    if precision not in OPENVINO_PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; accepted: {', '.join(OPENVINO_PRECISIONS)}")
    if precision == "bf16":
        if capabilities is None:
            capabilities = list(_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        if "BF16" not in capabilities:
            raise ConfigError("precision bf16: this CPU has no bf16 instructions (OpenVINO CPU capabilities: "
                              f"{', '.join(capabilities)}); use precision fp32")
    return _HINTS[precision]


def openvino_metadata(model: Any, path: str | os.PathLike = "model") -> DeployMetadata:
    """The :class:`DeployMetadata` stored in an OpenVINO model's ``rt_info`` by :func:`export_openvino`."""
    if not model.has_rt_info([_RT_KEY, "format"]):
        raise CheckpointError(f"{Path(path).name}: this OpenVINO model has no detkit metadata; export it with "
                              "detkit export --format openvino")
    info = model.get_rt_info()[_RT_KEY]
    props = {str(k): str(v.astype(str)) if hasattr(v, "astype") else str(v) for k, v in info.items()}
    return DeployMetadata.from_props(props)


def decode_ignored_scope(model: Any, last_convs: bool = False) -> list[str]:
    """Names of the ops NNCF leaves in float: those after the network's last convolutions (box
    decoding, sigmoid, DFL's softmax and expectation, reshapes, NMS) and, with ``last_convs``, the
    last convolutions themselves (the head's prediction convs). Their outputs are logits, pixel
    coordinates and scores, which 8-bit steps coarsen, and they cost little (measured on the demo
    model: int8 AP 1.8 points under fp32 with the decode ops in float, 1.25 with the prediction
    convs too).

    An op is after the last convolutions when no convolution depends on it (inputs, outputs and
    constants are never listed)."""
    feeds_conv: set[str] = set()
    for op in reversed(list(model.get_ordered_ops())):  # consumers before producers
        name = op.get_friendly_name()
        conv_here = op.get_type_name() in ("Convolution", "GroupConvolution")
        consumers = [t.get_node() for out in op.outputs() for t in out.get_target_inputs()]
        if conv_here or any(c.get_friendly_name() in feeds_conv for c in consumers):
            feeds_conv.add(name)
    skip = {"Parameter", "Constant", "Result"} | (set() if last_convs else {"Convolution", "GroupConvolution"})
    convs = {"Convolution", "GroupConvolution"}
    out = []
    for op in model.get_ordered_ops():
        name, kind = op.get_friendly_name(), op.get_type_name()
        if kind in skip:
            continue
        consumers = [t.get_node().get_friendly_name() for o in op.outputs() for t in o.get_target_inputs()]
        last = kind in convs and not any(c in feeds_conv for c in consumers)
        if name not in feeds_conv or last:
            out.append(name)
    return out


_PRECISION_KEEPING = ("Concat", "MaxPool", "Interpolate", "Split", "VariadicSplit", "Reshape", "Transpose",
                      "StridedSlice")


def _quantized_input(node: Any) -> bool:
    """Whether ``node``'s output is an int8 activation: a FakeQuantize, or ops that only move values
    (concat, max pooling, nearest upsampling, splits, reshapes) over int8 activations only."""
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    inputs = [v.get_node() for v in node.input_values() if v.get_node().get_type_name() != "Constant"]
    return kind in _PRECISION_KEEPING and bool(inputs) and all(_quantized_input(n) for n in inputs)


def float_convolutions(model: Any) -> list[str]:
    """Names of the convolutions of an int8 IR (NNCF's) that run in float: their weights are not
    quantized (a plain constant), or their input activations are not int8 (no FakeQuantize before
    them, directly or through ops that only move values, such as a concat of quantized tensors)."""
    convs = [op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]
    return [op.get_friendly_name() for op in convs
            if op.input_value(1).get_node().get_type_name() == "Constant"
            or not _quantized_input(op.input_value(0).get_node())]


@dataclass
class AccuracyControl:
    """int8 with accuracy control (``nncf.quantize_with_accuracy_control``): after post-training
    quantization, NNCF ranks the quantized layers by what they cost ``validate`` and reverts the
    worst to float until the metric is within ``max_drop`` of the float model's.

    Args:
        validate: ``validate(detector, items)``: the metric (higher is better; COCO AP in 0..1 for
            detkit's :func:`~detkit.deploy.calibration.held_out_ap`) of an :class:`OpenVinoDetector`
            on the held-out items (positions ``0..size-1``; None: all of them). These must not be
            the images the reported metric is measured on.
        size: number of held-out items.
        max_drop: the largest accepted absolute drop of the metric (0.01: one AP point).
        ranking_size: held-out items NNCF ranks the quantized layers on (one ``validate`` per layer
            group; default all ``size``): the largest share of the time accuracy control takes.

    After :func:`export_openvino` the figures it measured are filled in: ``reference`` (float
    model), ``quantized`` (the written int8 model), ``float_convs`` (its convolutions left in float,
    :func:`float_convolutions`, the prediction convs included) and ``convs`` (all of them).
    """

    validate: Callable[[Any, Sequence[int] | None], float]
    size: int
    max_drop: float = 0.01
    ranking_size: int | None = None
    reference: float = float("nan")
    quantized: float = float("nan")
    float_convs: list[str] = field(default_factory=list)
    convs: int = 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"accuracy control needs at least one held-out item, got size={self.size}")
        if not 0 <= self.max_drop < 1:
            raise ValueError(f"max_drop is an absolute drop of the metric in [0, 1), got {self.max_drop}")

    def validation_fn(self, metadata: DeployMetadata) -> Callable[[Any, Iterable[Any]], tuple[float, None]]:
        """NNCF's ``validation_fn(compiled_model, items)`` for items ``0..size-1``."""

        def validation_fn(compiled: Any, items: Iterable[Any]) -> tuple[float, None]:
            chosen = [int(i) for i in items]
            detector = OpenVinoDetector.from_compiled(compiled, metadata)
            return self.validate(detector, None if chosen == list(range(self.size)) else chosen), None

        return validation_fn


def export_openvino(
    onnx_path: str | os.PathLike,
    xml_path: str | os.PathLike,
    *,
    calibration: Iterable[np.ndarray] | None = None,
    calibration_size: int = 300,
    accuracy: AccuracyControl | None = None,
    keep_float: Sequence[str] = (),
    quantize_head: bool = False,
) -> Path:
    """Convert a detkit ``.onnx`` (:func:`detkit.deploy.export_onnx`) to OpenVINO IR, int8 when
    ``calibration`` is given.

    Args:
        onnx_path: the exported ONNX model (its detkit metadata is copied into the IR).
        xml_path: output ``.xml`` (the weights go to the ``.bin`` beside it; parents are created).
        calibration: int8 post-training quantization (NNCF, ``nncf.quantize``, mixed preset:
            symmetric weights, asymmetric activations; with ``accuracy`` its default symmetric preset) calibrated
            on these
            letterboxed batches, each ``(B, 3, H, W)`` float32 RGB 0..1 at the model's input size
            (B = 1 unless the graph has a dynamic batch); None: fp32 weights.
        calibration_size: images NNCF draws from ``calibration`` (its ``subset_size``).
        accuracy: with ``calibration``: quantize with accuracy control (layers reverted to float
            until the held-out metric drops at most ``accuracy.max_drop``); its figures are filled in.
        keep_float: with ``calibration``: further op names (OpenVINO friendly names) left in float,
            besides the decode ops and prediction convs (:func:`decode_ignored_scope`).
        quantize_head: with ``calibration``: quantize the head's prediction convs too (Ultralytics' choice;
            only the decode ops stay in float): the fastest int8 graph (YOLOv8n at 640: 0.3-0.8 ms of 18-19
            per image), at an accuracy cost (the demo model: 0.5 AP more).

    Returns:
        The written ``.xml`` path.

    Raises:
        MissingExtraError: openvino (or nncf, for int8) is not installed.
        CheckpointError: the ONNX model is missing or has no detkit metadata.
    """
    from detkit.extras import require

    ov = _openvino()
    onnx = require("onnx", "reading the ONNX model's metadata")
    nncf = None if calibration is None else require("nncf", "int8 quantization (NNCF)")
    src, out = Path(onnx_path), Path(xml_path)
    if not src.is_file():
        raise CheckpointError(f"ONNX model not found: {src}")
    if out.suffix != ".xml":
        raise ValueError(f"OpenVINO output path must end in .xml, got {out}")
    props = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    meta = DeployMetadata.from_props(props)  # refuses a model detkit did not export
    model = ov.convert_model(str(src))
    if nncf is not None and calibration is not None:
        import logging

        logging.getLogger("nncf").setLevel(logging.WARNING)  # not its per-op notes
        dataset = nncf.Dataset(list(calibration))
        # Plain int8: asymmetric activations (NNCF's mixed preset; weights stay symmetric), a faster graph
        # (YOLOv8n at 640: 0.2-0.4 ms of 19 per image) for 0.19 AP on the demo model (-1.44 against -1.25).
        # Accuracy control keeps NNCF's default (symmetric) preset: with it the demo model's val AP met the
        # 1-point limit (-0.72), with the mixed one it did not (-1.20; held-out drops 0.96 and 0.79).
        preset = nncf.QuantizationPreset.MIXED if accuracy is None else nncf.QuantizationPreset.PERFORMANCE
        ignored = nncf.IgnoredScope(names=decode_ignored_scope(model, last_convs=not quantize_head) + list(keep_float),
                                    validate=False)
        if accuracy is None:
            model = nncf.quantize(model, dataset, subset_size=int(calibration_size), ignored_scope=ignored,
                                  preset=preset)
            how = "int8, prediction convs included" if quantize_head else "int8"
        else:
            reference = accuracy.validation_fn(meta)(ov.Core().compile_model(model, "CPU", _FP32), range(accuracy.size))
            model = nncf.quantize_with_accuracy_control(
                model, dataset, nncf.Dataset(list(range(accuracy.size))), accuracy.validation_fn(meta),
                max_drop=float(accuracy.max_drop), drop_type=nncf.DropType.ABSOLUTE,
                subset_size=int(calibration_size), ignored_scope=ignored, preset=preset,
                advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(
                    ranking_subset_size=min(accuracy.ranking_size or accuracy.size, accuracy.size)))
            accuracy.reference = reference[0]
            accuracy.quantized = accuracy.validation_fn(meta)(ov.Core().compile_model(model, "CPU", _FP32),
                                                              range(accuracy.size))[0]
            accuracy.float_convs = float_convolutions(model)
            accuracy.convs = sum(op.get_type_name() in ("Convolution", "GroupConvolution")
                                 for op in model.get_ordered_ops())
            how = (f"int8 with accuracy control (max drop {accuracy.max_drop:g} on {accuracy.size} held-out images: "
                   f"{accuracy.reference:.4f} float, {accuracy.quantized:.4f} int8; "
                   f"{len(accuracy.float_convs)} of {accuracy.convs} convolutions in float)")
        meta.source["quantization"] = f"{how} (nncf {nncf.__version__}, {int(calibration_size)} calibration images)"
    meta.source["openvino"] = ov.__version__
    for key, value in meta.to_props().items():
        model.set_rt_info(value, [_RT_KEY, key])
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out), compress_to_fp16=False)  # fp32 weights: fp16 would change the outputs
    return out


class _CompiledSession:
    """An OpenVINO compiled model behind ``onnxruntime.InferenceSession.run``'s call."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def run(self, names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.request.infer(dict(feeds))
        return [np.array(self.request.get_tensor(name).data, copy=True) for name in names]


class OpenVinoDetector(OnnxDetector):
    """An exported detkit model (OpenVINO IR ``.xml``) compiled for the CPU; ``run`` / ``predict`` as
    :class:`OnnxDetector`'s.

    Args:
        path: the ``.xml`` written by :func:`export_openvino` / ``tools/export.py --format openvino``.
        precision: "fp32" (default) or "bf16" (float layers in bf16; refused on a CPU without it).
        threads: ``INFERENCE_NUM_THREADS`` (default: OpenVINO's choice, one per physical core).
        device: the OpenVINO device ("CPU").
        config: further ``compile_model`` properties.
    """

    def __init__(self, path: str | os.PathLike, precision: str = "fp32", threads: int | None = None,
                 device: str = "CPU", config: Mapping[str, Any] | None = None) -> None:
        ov = _openvino()
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"OpenVINO model not found: {self.path}")
        if not self.path.with_suffix(".bin").is_file():
            raise CheckpointError(f"{self.path}: its weights {self.path.with_suffix('.bin').name} are missing")
        core = ov.Core()
        model = core.read_model(str(self.path))
        self.metadata = openvino_metadata(model, self.path)
        self.precision = precision
        properties: dict[str, Any] = {"INFERENCE_PRECISION_HINT": check_precision(precision)}
        if threads:
            properties["INFERENCE_NUM_THREADS"] = int(threads)
        properties.update(config or {})
        self.session = _CompiledSession(core.compile_model(model, device, properties))  # type: ignore[assignment]
        self.output_names = [o.get_any_name() for o in model.outputs]
        if tuple(self.output_names) != self.metadata.output_names:
            raise CheckpointError(f"{self.path}: outputs {self.output_names} differ from the metadata's "
                                  f"{list(self.metadata.output_names)}")

    @classmethod
    def from_compiled(cls, compiled: Any, metadata: DeployMetadata, precision: str = "fp32") -> OpenVinoDetector:
        """A detector on an already compiled OpenVINO model (NNCF's accuracy control hands those
        to its validation function) with the metadata of the model it was converted from."""
        self = cls.__new__(cls)
        self.path = Path("compiled_model")
        self.metadata, self.precision = metadata, precision
        self.session = _CompiledSession(compiled)  # type: ignore[assignment]
        self.output_names = [o.get_any_name() for o in compiled.outputs]
        return self
