"""detkit's peer presets next to the peers' own assigners, on the same random batches.

    .venv-bench/bin/python benchmarks/parity_assigners.py [--batches 8] [--seed 0]    (or `make parity`)

For each preset ``<rule>-<peer>`` (and the paper rules that have a reference implementation) this
runs the peer's code and detkit's preset on the same inputs and counts, over every prior of every
batch: priors positive on one side only, positives assigned to different GTs, and positives whose
soft target (TAL's normalised metric, the IoU of SimOTA / DSL) differs by more than 1e-5.

Batches: a 256x256 input (strides 8/16/32, so grid coordinates are exact in fp32), 4 images of up
to 16 GTs, trailing padding rows of zeros (as the peers' own collate functions make them), GT
sides log-uniform from 0.5 px to 400 px (tiny GTs well under a stride, huge ones past the image),
aspect ratios up to 4:1, 20 classes, predictions scattered around the priors with logits
N(-3, 2). Coordinates are multiples of 1/64 px so that xyxy <-> cxcywh conversions are exact and
every side sees the same boxes. Peers are installed only in ``.venv-bench`` (see ``make parity``).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import types
import warnings
from collections.abc import Callable

import torch

from detkit.anchors import PointGenerator, YOLOAnchorGenerator
from detkit.assigners import AssignResult
from detkit.assigners.presets import build_preset

SIZE = 256
STRIDES = (8, 16, 32)
FEATS = [(SIZE // s, SIZE // s) for s in STRIDES]
NUM_CLASSES = 20
BATCH, MAX_GTS = 4, 16
YOLOV5_ANCHORS = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)], [(116, 90), (156, 198), (373, 326)]]
SOFT_TOL = 1e-5
QUANTUM = 64.0  # coordinates are multiples of 1/64 px


def make_batch(seed: int, anchors: bool = False) -> dict:
    """One random batch: priors, GTs with trailing zero padding, predictions (boxes, logits)."""
    g = torch.Generator().manual_seed(seed)
    gen = YOLOAnchorGenerator(YOLOV5_ANCHORS, STRIDES) if anchors else PointGenerator(STRIDES)
    grid = gen.grid_priors(FEATS)
    priors, strides, counts = grid
    grid = None if isinstance(grid, tuple) else grid  # a PriorGrid (detkit >= issue 30) goes to assign as is
    side = torch.exp(torch.empty(BATCH, MAX_GTS, 1).uniform_(math.log(0.5), math.log(400), generator=g))  # px
    aspect = torch.exp(torch.empty(BATCH, MAX_GTS, 1).uniform_(-0.7, 0.7, generator=g))  # up to 4:1
    wh = torch.cat([side * aspect, side / aspect], -1)
    centre = torch.rand(BATCH, MAX_GTS, 2, generator=g) * SIZE
    boxes = quantise(torch.cat([centre - wh / 2, centre + wh / 2], -1))
    num_valid = torch.randint(MAX_GTS // 2, MAX_GTS + 1, (BATCH,), generator=g)
    num_valid[0] = MAX_GTS  # one image without padding
    mask = torch.arange(MAX_GTS)[None] < num_valid[:, None]  # trailing padding rows
    boxes = torch.where(mask[..., None], boxes, torch.zeros_like(boxes))
    labels = torch.randint(0, NUM_CLASSES, (BATCH, MAX_GTS), generator=g).masked_fill(~mask, 0)
    n = priors.shape[0]
    centres = (priors[:, :2] + priors[:, 2:]) / 2
    pc = centres + torch.randn(BATCH, n, 2, generator=g) * strides[:, None] * 1.5
    pwh = strides[:, None] * 4 * torch.exp(torch.randn(BATCH, n, 2, generator=g) * 0.6)
    pred_boxes = quantise(torch.cat([pc - pwh / 2, pc + pwh / 2], -1))
    cls_logits = torch.randn(BATCH, n, NUM_CLASSES, generator=g) * 2 - 3
    obj_logits = torch.randn(BATCH, n, 1, generator=g) * 2
    return dict(priors=priors, grid=grid, prior_strides=strides, num_level_priors=counts, centres=centres,
                gt_boxes=boxes,
                gt_labels=labels, gt_mask=mask, pred_boxes=pred_boxes, cls_logits=cls_logits, obj_logits=obj_logits)


def quantise(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * QUANTUM) / QUANTUM


def detkit_assign(preset: str, x: dict, scores: torch.Tensor | None = None) -> AssignResult:
    if scores is None:
        scores = x["cls_logits"].sigmoid()
    return build_preset(preset).assign(
        x["priors"] if x["grid"] is None else x["grid"],
        x["gt_boxes"], x["gt_labels"], x["gt_mask"], num_level_priors=x["num_level_priors"],
        prior_strides=x["prior_strides"], pred_boxes=x["pred_boxes"], pred_scores=scores)


def compare(res: AssignResult, peer_gt: torch.Tensor, peer_soft: torch.Tensor | None,
            soft: torch.Tensor | None) -> dict[str, int]:
    """Counts: ``peer_gt (B, N)`` long (-1 not positive) and soft targets ``(B, N)`` against detkit's."""
    peer_pos = peer_gt >= 0
    both = peer_pos & res.pos_mask
    out = {"peer_pos": int(peer_pos.sum()), "detkit_pos": res.num_pos,
           "pos_diff": int((peer_pos != res.pos_mask).sum()),
           "gt_diff": int((peer_gt != res.gt_index)[both].sum())}
    if peer_soft is not None and soft is not None:
        out["soft_diff"] = int(((peer_soft - soft).abs() > SOFT_TOL)[both].sum())
    return out


# ------------------------------------------------------------------------------------------------
# peers
# ------------------------------------------------------------------------------------------------


def ultralytics_tal_v8(scores: torch.Tensor, pred_boxes: torch.Tensor, points: torch.Tensor, gt_labels: torch.Tensor,
                       gt_boxes: torch.Tensor, strides: list[int],
                       gt_mask: torch.Tensor | None = None, topk: int = 10,
                       topk2: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ultralytics 8.4's TaskAlignedAssigner as its v8DetectionLoss builds and calls it (padding rows
    are the all-zero ones, as v8DetectionLoss finds them, unless ``gt_mask (B, M)`` is given):
    ``topk=10`` for YOLOv8 / YOLO11 and YOLO26's one-to-many branch, ``topk=7, topk2=1`` for YOLO26's
    one-to-one branch (``E2ELoss``'s ``v8DetectionLoss(model, tal_topk=7, tal_topk2=1)``).

    Returns:
        ``Tensor[B, N]`` GT index (-1 not positive) and ``Tensor[B, N]`` soft target.
    """
    from ultralytics.utils.tal import TaskAlignedAssigner

    tal = TaskAlignedAssigner(topk=topk, num_classes=scores.shape[-1], alpha=0.5, beta=6.0, stride=list(strides),
                              topk2=topk2)
    if gt_mask is None:
        mask_gt = gt_boxes.sum(2, keepdim=True).gt_(0.0)  # v8DetectionLoss's padding rule
    else:
        mask_gt = gt_mask[..., None].float()
    _, _, target, fg, gt_idx = tal(scores, pred_boxes, points, gt_labels[..., None].float(), gt_boxes, mask_gt)
    return torch.where(fg.bool(), gt_idx, torch.full_like(gt_idx, -1)), target.amax(-1)


def peer_ultralytics_tal(x: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return ultralytics_tal_v8(x["cls_logits"].sigmoid(), x["pred_boxes"], x["centres"], x["gt_labels"],
                              x["gt_boxes"], list(STRIDES))


def peer_ultralytics_tal_e2e(x: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """YOLO26's one-to-one rule: Ultralytics' ``TaskAlignedAssigner(topk=7, topk2=1)``."""
    return ultralytics_tal_v8(x["cls_logits"].sigmoid(), x["pred_boxes"], x["centres"], x["gt_labels"],
                              x["gt_boxes"], list(STRIDES), topk=7, topk2=1)


def peer_yolov5(x: dict) -> tuple[torch.Tensor, int]:
    """YOLOv5's ComputeLoss.build_targets; per prior the GT of the last target it lists (the one its
    objectness write keeps), and the number of (prior, GT) pairs it trains box and class losses on."""
    from yolov5.utils.loss import ComputeLoss

    strides = torch.tensor(STRIDES, dtype=torch.float32)
    loss = types.SimpleNamespace(na=3, nl=3, device=torch.device("cpu"), hyp={"anchor_t": 4.0},
                                 anchors=torch.tensor(YOLOV5_ANCHORS, dtype=torch.float32) / strides.view(3, 1, 1))
    b_idx, m_idx = x["gt_mask"].nonzero(as_tuple=True)
    boxes = x["gt_boxes"][b_idx, m_idx]
    xywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1) / SIZE
    targets = torch.cat([b_idx[:, None].float(), m_idx[:, None].float(), xywh], 1)  # class column = GT index
    p = [torch.empty(BATCH, 3, h, w, 5 + NUM_CLASSES) for h, w in FEATS]
    tcls, _, indices, _ = ComputeLoss.build_targets(loss, p, targets)
    winner = torch.full((BATCH, x["priors"].shape[0]), -1, dtype=torch.long)
    start, pairs = 0, 0
    for level, (b, a, gj, gi) in enumerate(indices):
        h, w = FEATS[level]
        prior = start + (gj * w + gi) * 3 + a
        for k in range(len(b)):  # list order: the last target of a prior wins
            winner[b[k], prior[k]] = tcls[level][k]
        start += h * w * 3
        pairs += len(b)
    return winner, pairs


def yolox_head(num_classes: int = NUM_CLASSES) -> object:
    """A YOLOX 0.3.0 ``YOLOXHead`` for ``num_classes`` (its assignment uses no weights)."""
    from yolox.models.yolo_head import YOLOXHead

    warnings.filterwarnings("ignore", message=".*torch.cuda.amp.autocast.*")  # YOLOX's CPU-irrelevant autocast
    return YOLOXHead(num_classes, width=0.125)


def yolox_assignments(head: object, x: dict, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """YOLOX's ``get_assignments``, image by image as its ``get_losses`` calls it, on a batch of
    ``x`` (``gt_boxes``, ``gt_labels``, ``gt_mask``, ``pred_boxes`` xyxy, ``cls_logits``,
    ``obj_logits``, ``prior_strides``) with prior ``centres`` (N, 2). Returns the (B, N) GT index
    (-1 not positive) and the IoU of each positive's predicted box with its GT."""
    strides = x["prior_strides"][None]
    grid = centres / x["prior_strides"][:, None] - 0.5  # cell indices
    preds = x["pred_boxes"]
    preds_cxcywh = torch.cat([(preds[..., :2] + preds[..., 2:]) / 2, preds[..., 2:] - preds[..., :2]], -1)
    gt_index = torch.full(x["gt_mask"].shape[:1] + centres.shape[:1], -1, dtype=torch.long)
    ious = torch.zeros(gt_index.shape)
    for b in range(gt_index.shape[0]):
        num_gt = int(x["gt_mask"][b].sum())
        boxes = x["gt_boxes"][b, :num_gt]
        gt_cxcywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
        _, fg, pred_ious, matched, _ = head.get_assignments(
            b, num_gt, preds.shape[1], gt_cxcywh, x["gt_labels"][b, :num_gt].float(), preds_cxcywh[b], strides,
            grid[None, :, 0], grid[None, :, 1], x["cls_logits"], None, x["obj_logits"], None, None)
        gt_index[b, fg] = matched
        ious[b, fg] = pred_ious
    return gt_index, ious


def peer_yolox(x: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """YOLOX 0.3.0's assignment of the parity batch ``x``."""
    return yolox_assignments(yolox_head(), x, x["centres"])


def _load_mm() -> tuple[type, type]:
    """mmdet's DynamicSoftLabelAssigner and mmyolo's BatchDynamicSoftLabelAssigner without mmcv's
    compiled ops: ``mmcv.ops`` is replaced by a module whose ops raise if called (the assigners call
    none), and the model packages' ``__init__`` (which import every model) are skipped."""

    class NoOps(types.ModuleType):
        __path__: list[str] = []

        def __getattr__(self, name: str):
            if name.startswith("_"):
                raise AttributeError(name)

            def missing(*args, **kwargs):
                raise NotImplementedError(f"mmcv.ops.{name} needs mmcv's compiled ops")
            return missing

    import mmcv  # noqa: F401

    for name in ("mmcv.ops", "mmcv.ops.roi_align", "mmcv.ops.nms"):
        sys.modules.setdefault(name, NoOps(name))
    for name in ("mmdet.models", "mmdet.models.task_modules", "mmdet.models.task_modules.assigners",
                 "mmyolo.models", "mmyolo.models.task_modules", "mmyolo.models.task_modules.assigners"):
        if name not in sys.modules:
            parent, _, leaf = name.rpartition(".")
            module = types.ModuleType(name)
            module.__path__ = [os.path.join(importlib.import_module(parent).__path__[0], leaf)]
            sys.modules[name] = module
    importlib.import_module("mmdet.models.task_modules.assigners.iou2d_calculator")
    mmdet = importlib.import_module("mmdet.models.task_modules.assigners.dynamic_soft_label_assigner")
    mmyolo = importlib.import_module("mmyolo.models.task_modules.assigners.batch_dsl_assigner")
    return mmdet.DynamicSoftLabelAssigner, mmyolo.BatchDynamicSoftLabelAssigner


def _mm_priors(x: dict) -> torch.Tensor:
    """mmdet's point priors with strides: ``(N, 4)`` (cx, cy, stride, stride)."""
    s = x["prior_strides"][:, None]
    return torch.cat([x["centres"], s, s], 1)


def peer_mmdet_dsl(x: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """mmdet 3.3's DynamicSoftLabelAssigner (RTMDet's own code), image by image."""
    from mmengine.structures import InstanceData

    assigner = _load_mm()[0](soft_center_radius=3.0, topk=13, iou_weight=3.0)
    gt_index = torch.full(x["gt_mask"].shape[:1] + x["priors"].shape[:1], -1, dtype=torch.long)
    ious = torch.zeros(gt_index.shape)
    for b in range(BATCH):
        num_gt = int(x["gt_mask"][b].sum())
        pred = InstanceData(bboxes=x["pred_boxes"][b], scores=x["cls_logits"][b], priors=_mm_priors(x))
        gts = InstanceData(bboxes=x["gt_boxes"][b, :num_gt], labels=x["gt_labels"][b, :num_gt])
        res = assigner.assign(pred, gts)
        pos = res.gt_inds > 0
        gt_index[b, pos] = res.gt_inds[pos] - 1
        ious[b, pos] = res.max_overlaps[pos]
    return gt_index, ious


def peer_mmyolo_dsl(x: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """mmyolo 0.6's BatchDynamicSoftLabelAssigner (RTMDet in mmyolo), the whole batch at once; the GT
    of a positive is read back from its assigned box (the assigner returns boxes, not indices)."""
    assigner = _load_mm()[1](num_classes=NUM_CLASSES, soft_center_radius=3.0, topk=13, iou_weight=3.0)
    out = assigner(x["pred_boxes"], x["cls_logits"], _mm_priors(x), x["gt_labels"][..., None],
                   x["gt_boxes"], x["gt_mask"][..., None].float())
    pos = out["assigned_labels"] != NUM_CLASSES
    same = (out["assigned_bboxes"][:, :, None, :] == x["gt_boxes"][:, None, :, :]).all(-1)  # (B, N, M)
    gt_index = torch.where(pos, same.float().argmax(-1), torch.full_like(out["assigned_labels"], -1))
    return gt_index, out["assign_metrics"]


# ------------------------------------------------------------------------------------------------


def check_tal(x: dict) -> dict[str, int]:
    res = detkit_assign("tal-ultralytics", x)
    gt, soft = peer_ultralytics_tal(x)
    return compare(res, gt, soft, res.score_target)


def check_tal_e2e(x: dict) -> dict[str, int]:
    res = detkit_assign("tal-e2e-ultralytics", x)
    gt, soft = peer_ultralytics_tal_e2e(x)
    out = compare(res, gt, soft, res.score_target)
    # GTs positive at top 7 that topk2=1 leaves without any prior (all their positives' metrics are 0 and
    # torch.topk's pick among the zeros is not one of them): the edge case the preset must copy
    top7, _ = ultralytics_tal_v8(x["cls_logits"].sigmoid(), x["pred_boxes"], x["centres"], x["gt_labels"],
                                 x["gt_boxes"], list(STRIDES), topk=7)
    before = positives_per_gt(top7) > 0
    after = positives_per_gt(gt) > 0
    out["gts_emptied"] = int((before & ~after).sum())
    return out


def positives_per_gt(gt_index: torch.Tensor) -> torch.Tensor:
    """``(B, MAX_GTS)`` number of priors assigned to each GT slot, from a ``(B, N)`` GT index (-1 not positive)."""
    counts = torch.zeros(gt_index.shape[0], MAX_GTS + 1, dtype=torch.long)
    counts.scatter_add_(1, gt_index.clamp(min=-1) + 1, torch.ones_like(gt_index))
    return counts[:, 1:]


def check_yolov5(x: dict) -> dict[str, int]:
    res = detkit_assign("yolov5", x)
    gt, pairs = peer_yolov5(x)
    out = compare(res, gt, None, None)
    out["peer_pairs"] = pairs
    return out


def check_yolox(x: dict) -> dict[str, int]:
    res = detkit_assign("simota-yolox", x, scores=x["cls_logits"].sigmoid() * x["obj_logits"].sigmoid())
    gt, iou = peer_yolox(x)
    return compare(res, gt, iou, res.score_target)


def check_dsl(x: dict) -> dict[str, int]:
    res = detkit_assign("dsl", x)
    gt, iou = peer_mmdet_dsl(x)
    return compare(res, gt, iou, res.score_target)


def check_dsl_mmyolo(x: dict) -> dict[str, int]:
    res = detkit_assign("dsl-mmyolo", x)
    gt, iou = peer_mmyolo_dsl(x)
    return compare(res, gt, iou, res.score_target)


CHECKS: list[tuple[str, str, Callable[[dict], dict[str, int]], bool]] = [
    ("tal-ultralytics", "ultralytics TaskAlignedAssigner (v8DetectionLoss)", check_tal, False),
    ("tal-e2e-ultralytics", "ultralytics TaskAlignedAssigner(topk=7, topk2=1) (E2ELoss one-to-one)", check_tal_e2e,
     False),
    ("yolov5", "yolov5 ComputeLoss.build_targets", check_yolov5, True),
    ("simota-yolox", "yolox YOLOXHead.get_assignments", check_yolox, False),
    ("dsl", "mmdet DynamicSoftLabelAssigner", check_dsl, False),
    ("dsl-mmyolo", "mmyolo BatchDynamicSoftLabelAssigner", check_dsl_mmyolo, False),
]


def versions() -> str:
    names = ("torch", "ultralytics", "yolov5", "yolox", "mmdet", "mmyolo")
    out = []
    for name in names:
        try:
            out.append(f"{name} {importlib.import_module(name).__version__}")
        except Exception:  # noqa: BLE001 - a peer that does not import is reported as missing
            out.append(f"{name} missing")
    return ", ".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(f"## Assigner parity: {args.batches} batches (seeds {args.seed}..{args.seed + args.batches - 1}) "
          f"of {BATCH} images x {MAX_GTS} GT slots, {SIZE} px, strides {list(STRIDES)}, {NUM_CLASSES} classes")
    print(versions() + "\n")
    print("| detkit preset | peer | peer positives | detkit positives | positive disagreements | "
          "GT disagreements | soft-target disagreements (> 1e-5) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    failed = 0
    notes = []
    for preset, peer, check, anchors in CHECKS:
        total: dict[str, int] = {}
        try:
            for seed in range(args.seed, args.seed + args.batches):
                for key, value in check(make_batch(seed, anchors=anchors)).items():
                    total[key] = total.get(key, 0) + value
        except ImportError as e:
            print(f"| {preset} | {peer} | not installed ({e.name}) | | | | |")
            continue
        soft = str(total["soft_diff"]) if "soft_diff" in total else "n/a"
        print(f"| {preset} | {peer} | {total['peer_pos']} | {total['detkit_pos']} | {total['pos_diff']} | "
              f"{total['gt_diff']} | {soft} |")
        failed += total["pos_diff"] + total["gt_diff"] + total.get("soft_diff", 0)
        if "gts_emptied" in total:
            notes.append(f"{preset}: {total['gts_emptied']} GTs positive at Ultralytics' top 7 keep no prior after "
                         f"its topk2=1 filter (every positive's metric 0: torch.topk's pick among the zeros lands "
                         f"off the GT's positives); the counts above include them")
        if "peer_pairs" in total:
            notes.append(f"yolov5: YOLOv5 trains box/class losses on {total['peer_pairs']} (prior, GT) pairs; one "
                         f"label per prior keeps {total['detkit_pos']} "
                         f"({total['peer_pairs'] - total['detkit_pos']} pairs on shared priors dropped, "
                         f"{100 * (total['peer_pairs'] - total['detkit_pos']) / max(total['peer_pairs'], 1):.2f}%)")
    for note in notes:
        print("\n" + note)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
