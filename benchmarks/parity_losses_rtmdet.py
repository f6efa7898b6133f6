"""detkit's RTMDet-s loss and gradients against mmdet 3.3's own ``RTMDetHead.loss_by_feat``.

    .venv-bench/bin/python benchmarks/parity_losses_rtmdet.py [--seed 0]   (or `make parity`)

mmdet's RTMDet-s (``rtmdet_s_8xb32-300e_coco.py``: ``CSPNeXt`` P5 at deepen 0.33 / widen 0.5 with channel
attention, ``CSPNeXtPAFPN`` to 128 channels, ``RTMDetSepBNHead`` with convs shared across levels and a
BatchNorm per level, ``DynamicSoftLabelAssigner(topk=13)``, ``QualityFocalLoss(beta=2)``,
``GIoULoss(loss_weight=2)``), here with 5 classes and plain ``BN`` for the config's ``SyncBN`` (the same
arithmetic in one process), is built from mmdet's classes (``mmcv.ops`` stubbed: nothing here calls it),
given PyTorch's default init, random BatchNorm statistics and affine parameters and random prediction
biases (class logits about -3, box distances about 3 strides), and its ``state_dict`` is copied into
detkit's ``configs/rtmdet_s_dsl.py`` model (``model.head.num_classes=5``) through :func:`key_map`
(``strict=True``; every tensor lands on one of the same shape).

Both run in training mode (batch-statistics BatchNorm) on the batch of
``parity_losses_ultralytics.make_batch``: 4 images of 256 x 384 (H x W) of uniform noise, one letterboxed
with grey bands (a padded image), one without any GT; GTs from 2 px to the whole image. mmdet gets them
as ``InstanceData`` per image (``bboxes`` xyxy pixels, ``labels``), detkit as the padded ``(B, M, 4)``
tensor of the same float32 values.

Loss terms: mmdet's ``loss_cls`` (QFL over every prior, negatives towards 0, positives towards the
assigner's IoU, divided by the sum of those IoUs) and ``loss_bbox`` (2 x GIoU loss of the positives weighted
by their IoU target, divided by the same sum), each summed over the levels; detkit's ``loss_cls`` and
``loss_box`` (no batch-size factor: the RTMDet config trains with ``train.loss_scale="mean"``, as mmdet).
The assignments are compared too (priors positive on one side only, positives on different classes, the
worst IoU-target difference), read from mmdet's ``get_targets`` and detkit's assigner as they run.
The same models then get the same images without any GT: no positive, ``loss_cls`` over every prior
divided by 1 (both sides clamp the sum of targets at 1), ``loss_bbox`` 0 on both sides.

Gradients: each side's total is backpropagated and every parameter's gradient compared through the key map,
with ``parity_losses_ultralytics.gradient_differences``: ``||g_detkit - g_mmdet|| / max(||g_mmdet||, 1e-5
||G_mmdet||)`` per parameter (the floor only for gradients that are 0 in exact arithmetic), worst printed.
Pass: every loss term and every parameter within 1e-4 relative.

Priors: the passing case is mmdet's head as RTMDet ships it (``MlvlPointGenerator(offset=0)``: points on
cell corners) against the config as it is (``PointGenerator(offset=0.0)``). A second check builds both
sides at cell centres (mmdet ``offset=0.5``, detkit ``model.head.prior_generator.offset=0.5``, what every
other detkit head uses) and must pass too; a last row measures how far detkit's terms at cell centres sit
from RTMDet's own (the difference the config had before it used corner priors; reported, not a failure).

mmdet, mmengine and mmcv-lite are installed only in the benchmark venv (``make bench-setup``); exit status
2 without them, 1 when a check fails.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import time
import types
import warnings
from typing import Any

import torch
from parity_common import ROOT, Result, limit_threads, relative, table_header, table_row, verdict
from parity_losses_ultralytics import BATCH, HEIGHT, NUM_CLASSES, REL_TOL, WIDTH, gradient_differences, make_batch
from parity_yolov8_arch import randomise_batchnorm
from torch import Tensor, nn

from detkit.config import instantiate, load_config

CONFIG = ROOT / "configs/rtmdet_s_dsl.py"
STRIDES = (8, 16, 32)


# ------------------------------------------------------------------------------------------------
# mmdet
# ------------------------------------------------------------------------------------------------


def load_mmdet() -> types.SimpleNamespace:
    """mmdet's CSPNeXt, CSPNeXtPAFPN and RTMDetSepBNHead without mmcv's compiled ops: ``mmcv.ops`` is a
    module whose ops raise if called (RTMDet's training loss calls none) and the model packages'
    ``__init__`` files (which import every model, some needing the compiled ops) are skipped."""

    class NoOps(types.ModuleType):
        __path__: list[str] = []

        def __getattr__(self, name: str) -> Any:
            if name.startswith("_"):
                raise AttributeError(name)

            def missing(*args: Any, **kwargs: Any) -> Any:
                raise NotImplementedError(f"mmcv.ops.{name} needs mmcv's compiled ops")
            return missing

    import mmcv  # noqa: F401

    for name in ("mmcv.ops", "mmcv.ops.roi_align", "mmcv.ops.nms"):
        sys.modules.setdefault(name, NoOps(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformer = importlib.import_module("mmcv.cnn.bricks.transformer")
    if not hasattr(transformer, "MultiScaleDeformableAttention"):  # mmcv-lite lacks it; mmdet's layers import it
        transformer.MultiScaleDeformableAttention = type("MultiScaleDeformableAttention", (), {})
    for name in ("mmdet.models", "mmdet.models.backbones", "mmdet.models.necks", "mmdet.models.dense_heads",
                 "mmdet.models.layers"):
        if name not in sys.modules:
            parent, _, leaf = name.rpartition(".")
            module = types.ModuleType(name)
            module.__path__ = [os.path.join(importlib.import_module(parent).__path__[0], leaf)]
            sys.modules[name] = module
    layers = sys.modules["mmdet.models.layers"]
    if not hasattr(layers, "CSPLayer"):
        layers.CSPLayer = importlib.import_module("mmdet.models.layers.csp_layer").CSPLayer  # type: ignore[attr-defined]
    import mmdet

    importlib.import_module("mmdet.models.losses")  # registers QualityFocalLoss, GIoULoss
    return types.SimpleNamespace(
        version=mmdet.__version__,
        CSPNeXt=importlib.import_module("mmdet.models.backbones.cspnext").CSPNeXt,
        CSPNeXtPAFPN=importlib.import_module("mmdet.models.necks.cspnext_pafpn").CSPNeXtPAFPN,
        RTMDetSepBNHead=importlib.import_module("mmdet.models.dense_heads.rtmdet_head").RTMDetSepBNHead,
    )


class MMDetRTMDet(nn.Module):
    """mmdet's RTMDet-s parts under mmdet's names (``backbone``, ``neck``, ``bbox_head``)."""

    def __init__(self, mm: types.SimpleNamespace, num_classes: int, offset: float) -> None:
        super().__init__()
        from mmengine.config import ConfigDict

        norm, act = dict(type="BN"), dict(type="SiLU", inplace=True)
        self.backbone = mm.CSPNeXt(arch="P5", expand_ratio=0.5, deepen_factor=0.33, widen_factor=0.5,
                                   channel_attention=True, norm_cfg=norm, act_cfg=act)
        self.neck = mm.CSPNeXtPAFPN(in_channels=[128, 256, 512], out_channels=128, num_csp_blocks=1,
                                    expand_ratio=0.5, norm_cfg=norm, act_cfg=act)
        self.bbox_head = mm.RTMDetSepBNHead(
            num_classes=num_classes, in_channels=128, stacked_convs=2, feat_channels=128,
            anchor_generator=dict(type="MlvlPointGenerator", offset=offset, strides=list(STRIDES)),
            bbox_coder=dict(type="DistancePointBBoxCoder"),
            loss_cls=dict(type="QualityFocalLoss", use_sigmoid=True, beta=2.0, loss_weight=1.0),
            loss_bbox=dict(type="GIoULoss", loss_weight=2.0), with_objectness=False, exp_on_reg=False,
            share_conv=True, pred_kernel_size=1, norm_cfg=norm, act_cfg=act,
            train_cfg=ConfigDict(assigner=dict(type="DynamicSoftLabelAssigner", topk=13), allowed_border=-1,
                                 pos_weight=-1, debug=False))

    def forward(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        cls_scores, bbox_preds = self.bbox_head(self.neck(self.backbone(images)))
        return list(cls_scores), list(bbox_preds)


def random_mmdet_model(mm: types.SimpleNamespace, seed: int, offset: float,
                       num_classes: int = NUM_CLASSES) -> MMDetRTMDet:
    """mmdet's RTMDet-s with PyTorch's default init, random BatchNorm statistics and affine parameters and
    random prediction biases: class logits N(-3, 1) (scores near 0.05), box distances 3 + N(0, 0.5) strides
    (every level's predictions sized for its GTs, so every level gets positives)."""
    torch.manual_seed(seed)
    model = MMDetRTMDet(mm, num_classes, offset)
    randomise_batchnorm(model, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for conv in model.bbox_head.rtm_cls:
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) - 3.0)
        for conv in model.bbox_head.rtm_reg:
            conv.bias.copy_(3.0 + 0.5 * torch.randn(conv.bias.shape, generator=g))
    return model


# ------------------------------------------------------------------------------------------------
# weights
# ------------------------------------------------------------------------------------------------

_RENAMES = (
    (re.compile(r"^bbox_head\."), "head."),
    (re.compile(r"^backbone\.stage(\d+)\."), lambda m: f"backbone.stages.{int(m.group(1)) - 1}."),
    (re.compile(r"\.depthwise_conv\."), ".0."),  # mmcv's DepthwiseSeparableConvModule -> detkit's Sequential
    (re.compile(r"\.pointwise_conv\."), ".1."),
    (re.compile(r"^head\.reg_convs\."), "head.box_convs."),
    (re.compile(r"^head\.rtm_cls\."), "head.cls_preds."),
    (re.compile(r"^head\.rtm_reg\."), "head.box_preds."),
)
_SPP = re.compile(r"^(backbone\.stages\.3\.1)\.conv([12])\.")  # mmdet's SPPBottleneck conv1/2 -> SPPFBlock cv1/2


def key_map(name: str) -> str:
    """mmdet's ``state_dict`` / parameter name -> detkit's (``configs/rtmdet_s_dsl.py``)."""
    for pattern, repl in _RENAMES:
        name = pattern.sub(repl, name)
    return _SPP.sub(lambda m: f"{m.group(1)}.cv{m.group(2)}.", name)


def detkit_model(mm_model: nn.Module, num_classes: int = NUM_CLASSES,
                 offset: float | None = None) -> tuple[nn.Module, dict[str, str]]:
    """detkit's RTMDet-s from its config (its priors moved to ``offset`` cells when given) holding mmdet's
    weights (strict), and the parameter name map detkit name -> mmdet name (one to one, shapes equal;
    raises otherwise)."""
    overrides = [f"model.head.num_classes={num_classes}"]
    if offset is not None:
        overrides.append(f"model.head.prior_generator.offset={offset}")
    model = instantiate(load_config(CONFIG, overrides).model)
    theirs = mm_model.state_dict()
    state = {key_map(k): v for k, v in theirs.items()}
    ours = model.state_dict()
    if set(state) != set(ours):
        raise RuntimeError(f"key map mismatch: only mmdet {sorted(set(state) - set(ours))[:5]}, "
                           f"only detkit {sorted(set(ours) - set(state))[:5]}")
    bad = [k for k in ours if ours[k].shape != state[k].shape]
    if bad:
        raise RuntimeError(f"shapes differ at {bad[:5]}")
    model.load_state_dict(state, strict=True)
    names = {key_map(k): k for k, _ in mm_model.named_parameters()}
    ours_params = dict(model.named_parameters())
    if set(names) != set(ours_params):
        raise RuntimeError(f"parameter sets differ: {sorted(set(names) ^ set(ours_params))[:5]}")
    return model, names


# ------------------------------------------------------------------------------------------------
# batch
# ------------------------------------------------------------------------------------------------


def batches(seed: int) -> tuple[Tensor, dict[str, Tensor], list[Any], list[dict[str, Any]]]:
    """Images ``(B, 3, H, W)``, detkit's batch and mmdet's ``batch_gt_instances`` / ``batch_img_metas``, from
    ``make_batch`` (normalised xywh) as xyxy pixels, float32, the same values on both sides."""
    from mmengine.structures import InstanceData

    images, ub = make_batch(seed)
    xywh = ub["bboxes"].double() * torch.tensor([WIDTH, HEIGHT, WIDTH, HEIGHT], dtype=torch.float64)
    xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1).float()
    idx, labels = ub["batch_idx"].long(), ub["cls"].view(-1).long()
    counts = [int((idx == b).sum()) for b in range(BATCH)]
    m = max(counts)
    gt_boxes, gt_labels = torch.zeros(BATCH, m, 4), torch.zeros(BATCH, m, dtype=torch.long)
    gt_mask = torch.zeros(BATCH, m, dtype=torch.bool)
    instances, metas = [], []
    for b in range(BATCH):
        sel = idx == b
        gt_boxes[b, :counts[b]], gt_labels[b, :counts[b]], gt_mask[b, :counts[b]] = xyxy[sel], labels[sel], True
        instances.append(InstanceData(bboxes=xyxy[sel], labels=labels[sel]))
        metas.append(dict(img_shape=(HEIGHT, WIDTH), pad_shape=(HEIGHT, WIDTH)))
    dbatch = {"images": images, "gt_boxes": gt_boxes, "gt_labels": gt_labels, "gt_mask": gt_mask,
              "img_shape": torch.tensor([[HEIGHT, WIDTH]] * BATCH)}
    return images, dbatch, instances, metas


# ------------------------------------------------------------------------------------------------
# comparison
# ------------------------------------------------------------------------------------------------


def mmdet_losses(model: MMDetRTMDet, images: Tensor, instances: list[Any],
                 metas: list[dict[str, Any]]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """mmdet's ``loss_cls`` / ``loss_bbox`` (summed over levels) and its targets: ``labels (B, N)`` (C =
    background) and ``metrics (B, N)`` (the IoU targets), read from ``get_targets`` as the loss runs."""
    head = model.bbox_head
    seen: dict[str, Tensor] = {}
    original = head.get_targets

    def spy(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        seen["labels"] = torch.cat(out[1], 1)
        seen["metrics"] = torch.cat(out[4], 1)
        return out

    head.get_targets = spy
    try:
        cls_scores, bbox_preds = model(images)
        raw = head.loss_by_feat(cls_scores, bbox_preds, instances, metas)
    finally:
        del head.get_targets
    return {"cls": sum(raw["loss_cls"]), "box": sum(raw["loss_bbox"])}, seen


def detkit_losses(model: nn.Module, dbatch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Any]:
    """detkit's ``loss_cls`` / ``loss_box`` and the assigner's result, read as the pipeline runs."""
    pipeline = model.head.loss_pipeline
    assigner = pipeline.assigner
    seen: dict[str, Any] = {}
    original = assigner.assign

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen["result"] = original(*args, **kwargs)
        return seen["result"]

    assigner.assign = spy
    try:
        losses = model.loss(dbatch)
    finally:
        del assigner.assign
    return {"cls": losses["loss_cls"], "box": losses["loss_box"]}, seen["result"]


def compare_assignment(mm_targets: dict[str, Tensor], result: Any, num_classes: int) -> tuple[int, int, float, int]:
    """Priors positive on one side only, positives with different classes, the worst IoU-target difference
    over priors positive on both sides, and mmdet's positive count."""
    mm_pos = mm_targets["labels"] < num_classes
    pos = result.pos_mask
    both = mm_pos & pos
    pos_diff = int((mm_pos != pos).sum())
    cls_diff = int((mm_targets["labels"][both] != result.labels[both]).sum())
    soft = float((mm_targets["metrics"][both] - result.score_target[both].float()).abs().max()) if both.any() else 0.0
    return pos_diff, cls_diff, soft, int(mm_pos.sum())


def empty_batch(images: Tensor) -> tuple[dict[str, Tensor], list[Any]]:
    """detkit's and mmdet's GTs of a batch without any object (one all-padding row per image)."""
    from mmengine.structures import InstanceData

    dbatch = {"images": images, "gt_boxes": torch.zeros(BATCH, 1, 4),
              "gt_labels": torch.zeros(BATCH, 1, dtype=torch.long), "gt_mask": torch.zeros(BATCH, 1, dtype=torch.bool),
              "img_shape": torch.tensor([[HEIGHT, WIDTH]] * BATCH)}
    instances = [InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long)) for _ in range(BATCH)]
    return dbatch, instances


def compare(res: Result, label: str, mm_model: MMDetRTMDet, ours: nn.Module, names: dict[str, str],
            dbatch: dict[str, Tensor], instances: list[Any], metas: list[dict[str, Any]]) -> dict[str, Any]:
    """One batch: the assignment, both loss terms and every gradient (rows appended to ``res``); returns
    detkit's terms (and the assignment's result), mmdet's under ``"mmdet"``."""
    for p in (*mm_model.parameters(), *ours.parameters()):
        p.grad = None
    terms_m, targets = mmdet_losses(mm_model, dbatch["images"], instances, metas)
    terms_d, result = detkit_losses(ours, dbatch)
    pos_diff, cls_diff, soft, npos = compare_assignment(targets, result, NUM_CLASSES)
    passed = pos_diff == 0 and cls_diff == 0 and soft <= 1e-5
    res.ok &= passed
    res.rows.append(table_row(label, f"DSL assignment: {npos} positives, {pos_diff} differ, {cls_diff} other class, "
                                     f"worst IoU target difference {soft:.1e}", "", "", "", verdict(passed)))
    for term, key_m, key_d in (("cls", "loss_cls (QFL)", "loss_cls"), ("box", "loss_bbox (2 x GIoU)", "loss_box")):
        ref, got = float(terms_m[term].detach()), float(terms_d[term].detach())
        rel = abs(got - ref) if ref == 0 else relative(got, ref)  # no positive: both 0, compared absolutely
        res.ok &= rel <= REL_TOL
        res.rows.append(table_row(label, f"{key_m} / {key_d}", f"{ref:.6f}", f"{got:.6f}", f"{rel:.1e}",
                                  verdict(rel <= REL_TOL)))
    (terms_m["cls"] + terms_m["box"]).backward()
    (terms_d["cls"] + terms_d["box"]).backward()
    grads = gradient_differences(mm_model, ours, names)
    res.gradients(label, len(names), grads, names, max(grads.norm_rel, grads.floored_rel) <= REL_TOL)
    res.notes.append(f"{label}: worst elementwise gradient difference (floor 1e-3 of the tensor's largest) "
                     f"{grads.elem:.1e} ({grads.elem_name}); norm floor {grads.floor:.1e}")
    if grads.below_floor:
        res.notes.append(f"{label}: {len(grads.below_floor)} gradients under the floor, measured against it "
                         f"(mmdet / detkit norms): {', '.join(grads.below_floor)}; worst difference / floor "
                         f"{grads.floored_rel:.1e}")
    return {**terms_d, "result": result, "mmdet": {k: v.detach() for k, v in terms_m.items()}}


def run(mm: types.SimpleNamespace, seed: int) -> Result:
    res = Result()
    start = time.perf_counter()
    images, dbatch, instances, metas = batches(seed)
    # offset 0: RTMDet's priors as it ships them, and the config's; every term and gradient must agree
    mm_model = random_mmdet_model(mm, seed, offset=0.0)
    ours, names = detkit_model(mm_model)
    if ours.head.prior_generator.offset != 0.0:
        raise RuntimeError(f"{CONFIG.name} no longer puts its priors on cell corners (offset 0)")
    mm_model.train()
    ours.train()
    own = "RTMDet's priors (cell corners, offset 0)"
    terms_own = compare(res, own, mm_model, ours, names, dbatch, instances, metas)
    empty_d, empty_m = empty_batch(images)
    compare(res, "a batch without GTs (offset 0)", mm_model, ours, names, empty_d, empty_m, metas)
    # offset 0.5 on both sides: detkit's other heads' priors; must agree as well
    mm_centre = random_mmdet_model(mm, seed, offset=0.5)
    ours_centre, _ = detkit_model(mm_centre, offset=0.5)
    mm_centre.train()
    ours_centre.train()
    terms_centre = compare(res, "priors at cell centres (offset 0.5 on both sides)", mm_centre, ours_centre, names,
                           dbatch, instances, metas)
    # what the config's corner priors changed: detkit at cell centres against RTMDet's own terms (measured)
    label = "detkit at cell centres vs RTMDet's corners (before the config's offset 0)"
    # detkit's corner assignment equals mmdet's (checked above), so its positives stand for RTMDet's
    pos_diff = int((terms_own["result"].pos_mask != terms_centre["result"].pos_mask).sum())
    res.rows.append(table_row(label, f"DSL assignment: {int(terms_centre['result'].pos_mask.sum())} positives, "
                                     f"{pos_diff} priors differ from RTMDet's", "", "", "", verdict(True, False)))
    for term, key_m in (("cls", "loss_cls (QFL)"), ("box", "loss_bbox (2 x GIoU)")):
        res.term(label, key_m, float(terms_own["mmdet"][term]), float(terms_centre[term].detach()), REL_TOL,
                 check=False)
    res.notes.append(f"{time.perf_counter() - start:.1f} s")
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # the peers' deprecation notices (torch.cuda.amp.autocast, meshgrid's indexing, mmcv-lite's missing ops)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        mm = load_mmdet()
    except ImportError as e:
        print(f"mmdet / mmengine / mmcv are not installed ({e}): run `make bench-setup` and use .venv-bench/bin/python")
        return 2
    limit_threads()
    print(f"## RTMDet-s loss and gradient parity with mmdet {mm.version} (torch {torch.__version__}): {BATCH} images "
          f"{HEIGHT}x{WIDTH}, {NUM_CLASSES} classes, training mode, tolerance {REL_TOL:g} relative\n")
    print(table_header("case", "term", "mmdet", "detkit", "relative difference", "", right=(2, 3, 4)))
    return run(mm, args.seed).report(flush=True)


if __name__ == "__main__":
    sys.exit(main())
