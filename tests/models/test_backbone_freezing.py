"""frozen_stages / norm_eval of every backbone (one FrozenStagesMixin, each backbone's own stage numbering)."""

import pytest
import torch
from torch import nn

from detkit.models.backbones import CSPDarknet, ResNet
from detkit.models.backbones.cspnext import CSPNeXt
from detkit.models.backbones.freezing import FrozenStagesMixin

# name -> (factory, modules frozen_stages covers, modules it leaves training; all reached by the forward)
CASES = {
    # stride-1 stem: frozen_stages=2 covers the stem and the first two strided stages
    "cspdarknet-yolov4": (lambda: CSPDarknet("yolov4", deepen_factor=0.33, widen_factor=0.125, frozen_stages=2),
                          ["stem", "stages.0", "stages.1"], ["stages.2", "stages.3", "stages.4"]),
    # stride-2 stem: the stem is stage 1 (stages.0 its Identity), so frozen_stages=2 covers one strided stage
    "cspdarknet-yolov8": (lambda: CSPDarknet("yolov8", scale="n", frozen_stages=2),
                          ["stem", "stages.1"], ["stages.2", "stages.3", "stages.4"]),
    "cspdarknet-yolov8-stem-only": (lambda: CSPDarknet("yolov8", scale="n", frozen_stages=0),
                                    ["stem"], ["stages.1", "stages.2"]),
    # ResNet: 0 freezes conv1/bn1, k also layer1..layerk
    "resnet18": (lambda: ResNet(18, frozen_stages=1), ["conv1", "bn1", "layer1"], ["layer2", "layer3", "layer4"]),
    "resnet18-stem-only": (lambda: ResNet(18, frozen_stages=0), ["conv1", "bn1"], ["layer1", "layer2"]),
    # CSPNeXt counts levels: the stem is level 1, so frozen_stages=2 covers the stem and stages.0 ...
    "cspnext-tiny": (lambda: CSPNeXt("tiny", frozen_stages=2), ["stem", "stages.0"], ["stages.1", "stages.3"]),
    # ... and frozen_stages=0 freezes nothing (the same as -1)
    "cspnext-tiny-none": (lambda: CSPNeXt("tiny", frozen_stages=0), [], ["stem", "stages.0", "stages.3"]),
}


def _bns(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def _stats(model: nn.Module, names: list[str]) -> dict[str, list[torch.Tensor]]:
    return {n: [b.running_mean.clone() for b in _bns(model.get_submodule(n))] for n in names}


@pytest.mark.parametrize("name", sorted(CASES))
def test_frozen_stages_stop_gradients_and_keep_bn_statistics(name):
    torch.manual_seed(0)
    factory, frozen, free = CASES[name]
    model = factory()
    assert isinstance(model, FrozenStagesMixin)
    model.eval()
    assert model.train() is model  # train() after eval() must re-apply the freezing
    for n in frozen:
        sub = model.get_submodule(n)
        assert not any(p.requires_grad for p in sub.parameters()), n
        assert not any(m.training for m in sub.modules()), n
    for n in free:
        sub = model.get_submodule(n)
        assert all(p.requires_grad for p in sub.parameters()), n
        assert all(b.training for b in _bns(sub)), n
    before = _stats(model, frozen + free)
    model(torch.randn(2, 3, 64, 64))
    after = _stats(model, frozen + free)
    for n in frozen:
        assert all(torch.equal(a, b) for a, b in zip(before[n], after[n])), n
    for n in free:
        assert before[n] and not any(torch.equal(a, b) for a, b in zip(before[n], after[n])), n
    model.train(False)  # eval keeps the gradients off
    assert all(not p.requires_grad for n in frozen for p in model.get_submodule(n).parameters())


@pytest.mark.parametrize("factory", [
    lambda: CSPDarknet("yolov8", scale="n", norm_eval=True),
    lambda: ResNet(18, norm_eval=True),
    lambda: CSPNeXt("tiny", norm_eval=True),
], ids=["cspdarknet", "resnet", "cspnext"])
def test_norm_eval_keeps_every_bn_statistic_but_trains_the_weights(factory):
    model = factory()
    model.eval()
    model.train()
    assert model.training and not any(b.training for b in _bns(model))
    assert all(p.requires_grad for p in model.parameters())
    before = [b.running_mean.clone() for b in _bns(model)]
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(a, b.running_mean) for a, b in zip(before, _bns(model)))
    # (without norm_eval the same call moves them: the first test's unfrozen modules)

def test_a_backbone_must_name_its_frozen_modules():
    class Bare(FrozenStagesMixin):
        def __init__(self) -> None:
            super().__init__()
            self.frozen_stages, self.norm_eval = 1, False

    with pytest.raises(NotImplementedError, match="Bare"):
        Bare().train()
