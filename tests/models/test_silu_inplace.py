"""detkit's SiLU (``make_activation("silu")``): in place only where autograd does not record the call, so a
training forward makes no copy of each activation's input (an in-place SiLU under autograd clones it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from detkit.models.layers import ConvBNAct, SiLU, make_activation


def test_out_of_place_when_recorded_in_place_otherwise():
    act = make_activation("silu")
    assert isinstance(act, SiLU) and isinstance(act, nn.SiLU) and act.inplace
    x = torch.tensor([-2.0, -0.5, 0.0, 1.5], requires_grad=True)
    h = x * 1.0  # a non-leaf, as a BatchNorm output
    y = act(h)
    assert y is not h and torch.equal(h, x.detach())  # recorded: the input is left as it was
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.sigmoid(x.detach()) * (1 + x.detach() * (1 - torch.sigmoid(x.detach()))))
    with torch.no_grad():
        h = x * 1.0
        y = act(h)
    assert y is h and torch.equal(y, F.silu(x.detach()))  # not recorded: in place
    frozen = torch.tensor([1.0, -1.0])  # grad enabled, nothing to record (a frozen stage's input)
    assert act(frozen) is frozen
    assert SiLU()(frozen) is not frozen  # inplace=False stays out of place


def test_training_forward_copies_no_activation_input():
    torch.manual_seed(0)
    net = nn.Sequential(*[ConvBNAct(4, 4, 3, act="silu") for _ in range(5)]).train()
    x = torch.rand(2, 4, 16, 16, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        net(x).sum().backward()
    counts = {e.key: e.count for e in prof.key_averages()}
    assert counts.get("aten::silu", 0) == 5 and counts.get("aten::silu_", 0) == 0
    assert counts.get("aten::clone", 0) == 0
    grads = [p.grad.clone() for p in net.parameters()]
    for m in net.modules():  # the old activation: torch's in-place SiLU, same gradients
        if isinstance(m, ConvBNAct):
            m.act = nn.SiLU(inplace=True)
    net.zero_grad()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        net(x).sum().backward()
    assert {e.key: e.count for e in prof.key_averages()}.get("aten::clone", 0) == 5
    for p, g in zip(net.parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)
