"""detkit's YOLO11 / YOLO26 layouts (backbone, neck and head) against Ultralytics' own, weight for weight.

    .venv-bench/bin/python benchmarks/parity_yolo11_arch.py [--scales n s m l x] [--size 224]

For each family and scale: a randomly initialised Ultralytics ``yolo11{scale}.yaml`` / ``yolo26{scale}.yaml``
model (80 classes) gets random weights, BatchNorm statistics and affine parameters; every tensor is copied
into detkit's model built from ``configs/yolo11{scale}_tal.py`` / ``configs/yolo26{scale}.py`` by the name map
of docs/models.md (the layer map, ``m`` -> ``blocks``, a bottleneck's ``cv1`` / ``cv2`` -> ``conv1`` /
``conv2``, Detect's ``cv2`` / ``cv3`` -> the head's box / class parts), with a strict ``load_state_dict``
(YOLO11's fixed DFL projection is the only tensor left out); then the neck outputs (Ultralytics' layers 16,
19, 22) and the head's raw maps (both branches for YOLO26) are compared in eval mode on the same input.
This checks the layouts alone, without ``detkit.models.convert`` (``parity_ultralytics_weights.py`` checks the
converter and the decoded outputs).

Ultralytics is installed only in the benchmark venv (``make bench-setup``), never as a detkit dependency;
exit status 2 when it is missing, 1 when a check fails.
"""

from __future__ import annotations

import argparse
import re
import sys

import torch
from parity_common import ROOT, table_header
from torch import Tensor, nn

from detkit.config import instantiate, load_config

CONFIGS = {"yolo11": "yolo11{}_tal.py", "yolo26": "yolo26{}.py"}
NECK_OUTPUTS = (16, 19, 22)
DETECT = 23
LAYERS: dict[int, str] = {0: "backbone.stem", 9: "backbone.stages.4.2", 10: "backbone.stages.4.3",
                          13: "neck.td_blocks.0", 16: "neck.td_blocks.1", 17: "neck.down.0", 19: "neck.bu_blocks.0",
                          20: "neck.down.1", 22: "neck.bu_blocks.1",
                          **{2 * k - 1: f"backbone.stages.{k}.0" for k in range(1, 5)},
                          **{2 * k: f"backbone.stages.{k}.1" for k in range(1, 5)}}


def detkit_key(model: nn.Module, key: str, bottleneck: type) -> str | None:
    """Ultralytics key -> detkit key (None for the DFL projection)."""
    parts = key.split(".")
    layer = int(parts[1])
    if layer == DETECT:
        match = re.fullmatch(r"(one2one_)?(cv2|cv3)\.(\d+)\.(\d+)\.(.+)", ".".join(parts[2:]))
        if match is None:
            assert key.endswith("dfl.conv.weight"), key
            return None
        prefix = "head.one2one_branch." if match.group(1) else "head."
        kind = "box" if match.group(2) == "cv2" else "cls"
        level, part, rest = match.group(3), int(match.group(4)), match.group(5)
        return f"{prefix}{kind}_preds.{level}.{rest}" if part == 2 else f"{prefix}{kind}_convs.{level}.{part}.{rest}"
    names = []
    for j in range(2, len(parts)):
        name, parent = parts[j], model.get_submodule(".".join(parts[:j]))
        if name == "m":
            name = "blocks"
        elif isinstance(parent, bottleneck) and name in ("cv1", "cv2"):
            name = "conv" + name[2]
        names.append(name)
    return f"{LAYERS[layer]}.{'.'.join(names)}"


def randomise(state: dict[str, Tensor], seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for key, t in state.items():
        if t.dtype.is_floating_point:
            t.copy_(torch.rand(t.shape, generator=gen) + 0.5 if key.endswith("running_var")
                    else torch.randn(t.shape, generator=gen) * 0.1)


def check(family: str, scale: str, size: int, modules: tuple[type, type]) -> bool:
    detection_model, bottleneck = modules
    ref = detection_model(f"{family}{scale}.yaml", verbose=False).eval()
    ours = instantiate(load_config(ROOT / "configs" / CONFIGS[family].format(scale)).model).eval()
    state = ref.state_dict()
    randomise(state, seed=0)
    mapped = {k2: v for k, v in state.items() if (k2 := detkit_key(ref, k, bottleneck)) is not None}
    ours.load_state_dict(mapped, strict=True)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outs: list[Tensor] = []
        y: Tensor | list[Tensor] = x
        for layer in ref.model[:DETECT]:
            if layer.f != -1:
                y = outs[layer.f] if isinstance(layer.f, int) else [y if j == -1 else outs[j] for j in layer.f]
            y = layer(y)
            outs.append(y)
        ref_feats = [outs[i] for i in NECK_OUTPUTS]
        detect = ref.model[DETECT]
        detect.training = True  # raw maps, no decoding
        ref_head = detect([f.clone() for f in ref_feats])
        feats = ours.neck(ours.backbone(x))
        raw = ours.head(feats)
    feat_diff = max(float((a - b).abs().max()) for a, b in zip(ref_feats, feats))
    r, c = ours.head.num_box_params, ours.head.num_classes
    branches = {"one2many": ref_head.get("one2many", ref_head)}
    if "one2one" in ref_head:
        branches["one2one"] = ref_head["one2one"]
    head_diff = {}
    for k, (name, ref_maps) in enumerate(branches.items()):
        start = k * (r + c)
        boxes = torch.cat([m[:, start:start + r].flatten(2) for m in raw], 2)
        scores = torch.cat([m[:, start + r:start + r + c].flatten(2) for m in raw], 2)
        head_diff[name] = max(float((ref_maps["boxes"] - boxes).abs().max()),
                              float((ref_maps["scores"] - scores).abs().max()))
    n_ref = sum(p.numel() for p in ref.parameters())
    n_ours = sum(p.numel() for p in ours.parameters())
    ok = feat_diff == 0.0 and all(d == 0.0 for d in head_diff.values())
    heads = " ".join(f"{name} {d:.1e}" for name, d in head_diff.items())
    print(f"| {family}{scale} | {n_ref:,} / {n_ours:,} | {feat_diff:.1e} | {heads} | {'ok' if ok else 'FAIL'} |")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", nargs="+", default=["n", "s", "m"], choices=list("nsmlx"))
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)
    try:
        from ultralytics.nn.modules.block import Bottleneck
        from ultralytics.nn.tasks import DetectionModel
    except ImportError:
        print("error: ultralytics is not installed (run from .venv-bench: make bench-setup)", file=sys.stderr)
        return 2
    import ultralytics

    print(f"# YOLO11 / YOLO26 layout parity, eval mode, input 2x3x{args.size}x{args.size}, "
          f"ultralytics {ultralytics.__version__}, torch {torch.__version__}")
    print(table_header("model", "params (Ultralytics / detkit)", "neck max abs diff", "head max abs diff", "result"))
    results = [check(family, scale, args.size, (DetectionModel, Bottleneck))
               for family in CONFIGS for scale in args.scales]
    print("(Ultralytics' YOLO11 count includes its 16 fixed DFL projection weights, which detkit holds as a constant.)")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
