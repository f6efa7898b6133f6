"""ResNet-18/34/50/101 with torchvision's parameter names, plus detection options.

Parameter names follow ``torchvision.models.ResNet`` (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0`` ...), so an ImageNet ``state_dict`` loads into the backbone with
strict key matching once ``fc.*`` is dropped (see :meth:`ResNet.load_torchvision`).

Options: frozen stages and BN kept in eval mode (``frozen_stages``, ``norm_eval``), DRN-style
dilation (``dilations=(1, 1, 2, 4)``: stages 4/5 keep stride 8 and dilate instead), SE blocks
(``se=True``, reduction 16, adds ``se.*`` parameters), and deformable 3x3 convs in chosen stages
(``dcn_stages=(3, 4, 5)``: ``conv2`` becomes :class:`~detkit.models.layers.DeformConv`, whose
``weight`` keeps the name, plus a zero-initialised ``conv2.conv_offset``).

Stage numbering: C2..C5 are ``layer1..layer4`` (strides 4, 8, 16, 32 without dilation);
``out_indices`` uses those numbers, default ``(3, 4, 5)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from detkit.models.backbones.freezing import FrozenStagesMixin
from detkit.models.layers import SE, DeformConv

__all__ = ["RESNET_DEPTHS", "BasicBlock", "Bottleneck", "ResNet"]


def _conv3x3(cin: int, cout: int, stride: int, dilation: int, deform: bool) -> nn.Module:
    if deform:
        return DeformConv(cin, cout, 3, stride, padding=dilation, dilation=dilation)
    return nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with identity shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, se: bool = False,
                 deform: bool = False) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride, dilation, False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation, deform)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SE(planes) if se else None
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here, as torchvision's v1.5) -> 1x1 with expansion 4 (ResNet-50/101)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, se: bool = False,
                 deform: bool = False) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation, deform)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.se = SE(out) if se else None
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        return self.relu(out + identity)


RESNET_DEPTHS: dict[int, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(FrozenStagesMixin):
    """ResNet backbone returning C-level feature maps.

    Args:
        depth: 18 | 34 | 50 | 101.
        out_indices: levels among 2..5 (``layer1..layer4``) to return.
        dilations: dilation of stages 2..5; a stage with dilation > 1 has stride 1 (DRN style),
            e.g. ``(1, 1, 2, 4)`` keeps stages 4/5 at stride 8.
        frozen_stages: 0 freezes the stem, ``k`` also ``layer1..layer{k}``; -1 freezes nothing.
        norm_eval: keep every BatchNorm in eval mode while training (ImageNet statistics).
        se: add squeeze-and-excitation (reduction 16) to every block.
        dcn_stages: levels (2..5) whose 3x3 convs are deformable.

    Attributes:
        out_channels: channels of each returned level.
        strides: their strides.

    Shapes: ``(B, 3, H, W) -> [(B, out_channels[i], H / strides[i], W / strides[i])]``.
    """

    def __init__(
        self,
        depth: int = 50,
        *,
        out_indices: Sequence[int] = (3, 4, 5),
        dilations: Sequence[int] = (1, 1, 1, 1),
        frozen_stages: int = -1,
        norm_eval: bool = False,
        se: bool = False,
        dcn_stages: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"unknown ResNet depth {depth}; accepted: {sorted(RESNET_DEPTHS)}")
        out_indices, dcn_stages = tuple(out_indices), tuple(dcn_stages)
        for name, levels in (("out_indices", out_indices), ("dcn_stages", dcn_stages)):
            if any(i not in range(2, 6) for i in levels):
                raise ValueError(f"{name} must be levels in 2..5, got {list(levels)}")
        if not out_indices:
            raise ValueError("out_indices must name at least one level in 2..5")
        if len(dilations) != 4 or any(d < 1 for d in dilations):
            raise ValueError(f"dilations must be 4 positive ints (stages 2..5), got {dilations}")
        block, layers = RESNET_DEPTHS[depth]
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stride_total = 64, 4
        chans, strides = [], []
        for i, (n, dil) in enumerate(zip(layers, dilations)):
            level = i + 2
            planes = 64 * 2**i
            stride = 1 if (i == 0 or dil > 1) else 2
            stride_total *= stride
            cout = planes * block.expansion
            downsample = None
            if stride != 1 or cin != cout:
                downsample = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )
            deform = level in dcn_stages
            blocks = [block(cin, planes, stride, dil, downsample, se, deform)]
            blocks += [block(cout, planes, 1, dil, None, se, deform) for _ in range(1, n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
            chans.append(cout)
            strides.append(stride_total)
        self.out_channels: list[int] = [chans[i - 2] for i in out_indices]
        self.strides: list[int] = [strides[i - 2] for i in out_indices]
        self._init_weights()
        self._freeze()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, DeformConv)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Offsets must start at zero so a deformable conv starts as the plain conv.
        for m in self.modules():
            if isinstance(m, DeformConv):
                nn.init.zeros_(m.conv_offset.weight)
                assert m.conv_offset.bias is not None  # built with bias=True
                nn.init.zeros_(m.conv_offset.bias)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        mods: list[nn.Module] = [self.conv1, self.bn1]
        return mods + [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]

    def load_torchvision(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load a torchvision ResNet ``state_dict`` (``fc.*`` dropped); every backbone key that
        torchvision has must match. Keys torchvision lacks (``se.*``, ``conv_offset.*``) keep
        their initial values."""
        sd = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        missing, unexpected = self.load_state_dict(sd, strict=False)
        missing = [k for k in missing if ".se." not in k and "conv_offset" not in k]
        if missing or unexpected:
            raise ValueError(
                f"state_dict does not match ResNet: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}; expected torchvision ResNet keys of the same depth"
            )

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for level in range(2, 6):
            x = getattr(self, f"layer{level - 1}")(x)
            if level in self.out_indices:
                outs.append(x)
            if level >= max(self.out_indices):
                break
        return outs
