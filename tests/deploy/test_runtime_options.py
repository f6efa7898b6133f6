"""Runtime defaults for CPU users: ONNX Runtime's spinning switch (--no-spin) and channels_last for PyTorch.

Each case reads the setting back from what runs (the session's options, the model's weights, the input a
convolution receives), not from the arguments given.
"""

from __future__ import annotations

import cv2
import pytest
import torch
from torch import nn

import detkit.deploy.predictor as predictor_module
import detkit.deploy.runtimes as runtimes
from detkit.data.shapes import make_shape_image
from detkit.deploy import load_predictor
from detkit.deploy.onnx_runtime import SPIN_KEY, OnnxDetector
from detkit.deploy.runtimes import open_exported
from detkit.engine import evaluate as evaluate_module
from detkit.engine import inference
from detkit.errors import ConfigError
from detkit.models.memory_format import is_channels_last, to_inference_memory_format
from tests.deploy.conftest import CFG
from tests.fixtures.spies import record_calls
from tests.fixtures.tools import load_tool


def _spin_entry(detector: OnnxDetector) -> str | None:
    """The session's ``allow_spinning`` entry as ONNX Runtime holds it (None: unset, ORT's default: spin)."""
    try:
        return detector.session.get_session_options().get_session_config_entry(SPIN_KEY)
    except RuntimeError:  # ORT raises for an entry never set
        return None


def _frames(n: int = 2) -> list:
    return [make_shape_image(i, 200)[0][:, :, ::-1].copy() for i in range(n)]


class _Stop(Exception):
    """Raised by a spy once it has seen what the test wants (no evaluation after it)."""


# ---- ONNX Runtime: spinning --------------------------------------------------------------------------------------


def test_onnx_session_spins_by_default_and_sleeps_with_spin_false(onnx_plain):
    assert _spin_entry(OnnxDetector(onnx_plain)) is None  # ORT's default: idle threads spin
    assert _spin_entry(OnnxDetector(onnx_plain, spin=False)) == "0"
    assert _spin_entry(open_exported(onnx_plain, spin=False)) == "0"
    # an explicit session_config entry wins over spin
    assert _spin_entry(OnnxDetector(onnx_plain, spin=False, session_config={SPIN_KEY: "1"})) == "1"


def test_onnx_session_uses_ort_enable_all(onnx_plain):
    import onnxruntime as ort

    level = OnnxDetector(onnx_plain).session.get_session_options().graph_optimization_level
    assert level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_spin_false_gives_the_same_detections(onnx_plain, same_detections):
    frames = _frames()
    spin, sleep = load_predictor(onnx_plain), load_predictor(onnx_plain, spin=False)
    assert _spin_entry(sleep.model) == "0"
    a, b = spin(frames), sleep(frames)
    assert sum(len(d["scores"]) for d in a) > 0
    same_detections(a, b, box_atol=0.0, score_atol=0.0)


def test_spin_bad_values_are_refused(onnx_plain, checkpoint, tmp_path):
    with pytest.raises(TypeError, match="spin must be a bool"):
        OnnxDetector(onnx_plain, spin="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spin=False applies to the ONNX Runtime backend"):
        load_predictor(checkpoint, CFG, device="cpu", spin=False)
    xml = tmp_path / "m.xml"
    xml.write_text("<net/>")
    with pytest.raises(ConfigError, match="ONNX Runtime option"):
        open_exported(xml, spin=False)


def _image(tmp_path):
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), make_shape_image(3, 200)[0][:, :, ::-1])
    return image


def test_infer_no_spin_reaches_the_session(tmp_path, onnx_plain, monkeypatch):
    calls = record_calls(monkeypatch, predictor_module, "load_onnx_predictor")
    infer = load_tool("infer")
    image = _image(tmp_path)
    for i, flags in enumerate(([], ["--no-spin"])):
        assert infer.main([str(onnx_plain), str(image), "--out", str(tmp_path / f"o{i}"), *flags]) == 0
    assert [_spin_entry(c.result.model) for c in calls] == [None, "0"]


def test_test_no_spin_reaches_the_session(onnx_plain, monkeypatch):
    seen = []
    real = runtimes.open_exported

    def spy(*args, **kwargs):
        seen.append(_spin_entry(real(*args, **kwargs)))
        raise _Stop

    monkeypatch.setattr(runtimes, "open_exported", spy)
    test = load_tool("test")
    for flags in ([], ["--no-spin"]):
        with pytest.raises(_Stop):
            test.main([str(CFG), str(onnx_plain), "--device", "cpu", "--no-progress", *flags])
    assert seen == [None, "0"]


def test_runtime_flags_on_the_wrong_backend_are_usage_errors(tmp_path, checkpoint, onnx_plain, capsys):
    image = _image(tmp_path)
    infer, test = load_tool("infer"), load_tool("test")
    assert infer.main([str(CFG), str(checkpoint), str(image), "--out", str(tmp_path / "o1"), "--no-spin"]) == 2
    assert "--no-spin applies to the ONNX Runtime backend (a .onnx model), not to torch" in capsys.readouterr().err
    assert infer.main([str(onnx_plain), str(image), "--out", str(tmp_path / "o2"), "--no-channels-last"]) == 2
    assert "--no-channels-last applies to the PyTorch backend, not to onnxruntime" in capsys.readouterr().err
    assert test.main([str(CFG), str(checkpoint), "--device", "cpu", "--no-spin"]) == 2
    assert "--no-spin applies to an ONNX Runtime (.onnx) model" in capsys.readouterr().err


# ---- PyTorch: channels_last ---------------------------------------------------------------------------------------


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def test_torch_predictor_runs_channels_last_on_cpu_with_the_same_outputs(checkpoint, same_detections):
    nhwc = load_predictor(checkpoint, CFG, device="cpu")
    plain = load_predictor(checkpoint, CFG, device="cpu", channels_last=False)
    assert nhwc.channels_last and is_channels_last(nhwc.model)
    assert not plain.channels_last and not is_channels_last(plain.model)
    inputs = []
    hook = _first_conv(nhwc.model).register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    frames = _frames()
    a, b = nhwc(frames), plain(frames)
    hook.remove()
    assert inputs and inputs[0].is_contiguous(memory_format=torch.channels_last)  # the letterboxed input too
    assert sum(len(d["scores"]) for d in a) > 0
    same_detections(a, b, box_atol=1e-3, score_atol=1e-5)
    # the raw network outputs: equal within fp32 rounding
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_a, out_b = nhwc.model(x.contiguous(memory_format=torch.channels_last)), plain.model(x)
    flat_a, flat_b = torch.utils._pytree.tree_leaves(out_a), torch.utils._pytree.tree_leaves(out_b)
    assert len(flat_a) == len(flat_b) > 0
    for ta, tb in zip(flat_a, flat_b):
        assert torch.allclose(ta, tb, rtol=1e-4, atol=1e-5), (ta - tb).abs().max()


def test_channels_last_only_on_cpu_and_only_when_enabled():
    conv = nn.Conv2d(3, 4, 3)
    assert to_inference_memory_format(conv, "meta") is conv and not is_channels_last(conv)  # not the CPU: left alone
    to_inference_memory_format(conv, "cpu", enabled=False)
    assert not is_channels_last(conv)
    to_inference_memory_format(conv, torch.device("cpu"))
    assert is_channels_last(conv)
    assert not is_channels_last(nn.Linear(2, 2))  # no 4-D weight: not channels_last


def test_evaluation_runs_a_channels_last_fused_copy_and_leaves_the_model_alone(deploy_cfg, varied_model,
                                                                             monkeypatch):
    seen = []

    def spy(model, *args, **kwargs):
        seen.append(is_channels_last(model))
        raise _Stop

    monkeypatch.setattr(inference, "evaluate_dataset", spy)
    val = evaluate_module.ValData(None, None)  # type: ignore[arg-type]  # never read: the spy stops first
    for fuse in (True, False):
        with pytest.raises(_Stop):
            evaluate_module.evaluate(deploy_cfg, varied_model, torch.device("cpu"), val=val, fuse=fuse)
    assert seen == [True, False]
    assert not is_channels_last(varied_model)  # the weights given are never converted
