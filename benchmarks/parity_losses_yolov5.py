"""detkit's YOLOv5s loss and gradients against the ``yolov5`` package's own ``ComputeLoss``.

    .venv-bench/bin/python benchmarks/parity_losses_yolov5.py [--seed 0]    (or `make parity`)

A randomly initialised yolov5 7.0.14 ``Model("yolov5s.yaml", nc=80)`` (BatchNorm eps 1e-3 / momentum 0.03
as its ``initialize_weights`` sets them) gets random BatchNorm statistics and affine parameters and random
``Detect`` biases (objectness and class logits about -3, box outputs near the anchor); its state dict goes
through the key map below into detkit's model of ``configs/yolov5s_yolov5.py`` (``strict=True``; the same
7,235,389 parameters). The loss: ``ComputeLoss`` with ``hyp.scratch-low.yaml`` (box 0.05, obj 1.0, cls 0.5,
anchor_t 4, no label smoothing, no focal loss) on YOLOv5's targets ``(image, class, x, y, w, h)``
normalised, against ``Detector.loss`` on the same GTs in pixels. Both in training mode.

Terms. YOLOv5 returns ``(lbox + lobj + lcls) x B`` with, per level ``i`` (``n_i`` of its (GT, anchor, cell)
claims), ``lbox = 0.05 sum_i mean(1 - CIoU)``, ``lcls = 0.5 sum_i mean over n_i x 80 of BCE``, ``lobj = 1.0
sum_i balance_i mean over the level's priors of BCE(obj, max(CIoU, 0))`` (balance 4, 1, 0.4; a prior claimed twice keeps
the IoU of its last claim). detkit's ``loss_*`` are the same terms as a mean over the batch (the trainer's
``loss_scale="batch"`` multiplies by B), so detkit's term x B is compared with YOLOv5's term x B.

Three differences, measured separately:

1. **Normalisation of the box and class terms (by mistake).** detkit's pipeline divides the box and class
   sums by all the positives of the batch; YOLOv5 by each level's own count, then sums the three levels, so
   a level with few positives weighs as much as one with many (and the whole is ~3x detkit's when the
   levels' losses are alike): box and class terms ~0.34x YOLOv5's on the parity batch.
2. **The objectness target (by mistake).** YOLOv5's positives learn the detached CIoU of their prediction
   with the GT (clamped at 0); the pipeline's ``obj_target="iou"`` gives the plain IoU (0.8% on the parity
   batch's objectness term).
   The rows "fixes 1, 2" run detkit's pipeline with both made as YOLOv5 makes them
   (:class:`YOLOv5Pipeline`, a subclass here, until ``YOLOLossPipeline`` has ``pos_normalize="level_sum"`` and
   ``obj_target="ciou"`` and the config sets them: the rows then read "as configured"); their row on a batch
   without priors claimed twice is the parity check.
3. **One label per prior (on purpose).** YOLOv5 trains box and class losses on every claim, so a prior
   claimed twice counts twice: by two GTs, or by one GT whose centre lies exactly on a cell border (its
   centre cell is then also its right / lower "neighbour"); detkit's assign result has one GT per prior
   (the claim YOLOv5 lists last, the one its objectness target keeps), so the other claims are dropped.
   Measured on the parity batch, on the same batch less the GTs that claim a prior twice or share one
   (expected: parity), and on coco128's real labels letterboxed to 640 (counts over every image; terms
   and gradients on its 2 most crowded images).

Gradients: both totals are backpropagated and every parameter's gradient compared through the key map,
with ``parity_losses_ultralytics.gradient_differences`` (norm-relative, floored at 1e-5 of the model's
gradient norm); the notes add the whole gradient's difference relative to its norm. Pass: with fixes 1 and
2 and no prior claimed twice, every term, the total and every gradient within 1e-4 relative; the other rows
are measurements.

yolov5 is installed only in the benchmark venv (``make parity``); exit status 2 without it, 1 when a check fails.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from parity_common import ROOT, Result, import_peer, limit_threads, table_header
from parity_losses_ultralytics import BATCH, HEIGHT, QUANTUM, REL_TOL, WIDTH, gradient_differences, make_batch
from parity_losses_yolox import pixel_boxes
from parity_yolov8_arch import randomise_batchnorm
from torch import Tensor, nn

from detkit.boxes import aligned_iou
from detkit.config import instantiate, load_config
from detkit.models import YOLOLossPipeline

CONFIG = ROOT / "configs" / "yolov5s_yolov5.py"
COCO128 = Path(os.environ.get("DETKIT_COCO128", ROOT.parent / "shared" / "data" / "coco128"))
NUM_CLASSES = 80
REAL_SIZE = 640
TERMS = ("box", "obj", "cls")

# yolov5s.yaml layer -> detkit module (CSPDarknet arch "yolov5-sppf": stage 1 is the 6x6 stem; CSPPAN "yolox")
LAYERS = {
    0: "backbone.stem", 1: "backbone.stages.1.0", 2: "backbone.stages.1.1", 3: "backbone.stages.2.0",
    4: "backbone.stages.2.1", 5: "backbone.stages.3.0", 6: "backbone.stages.3.1", 7: "backbone.stages.4.0",
    8: "backbone.stages.4.1", 9: "backbone.stages.4.2", 10: "neck.reduce.0", 13: "neck.td_blocks.0",
    14: "neck.reduce.1", 17: "neck.td_blocks.1", 18: "neck.down.0", 20: "neck.bu_blocks.0", 21: "neck.down.1",
    23: "neck.bu_blocks.1", 24: "head.preds",
}


def yolov5_to_detkit_key(key: str) -> str | None:
    """A yolov5s state-dict key -> detkit's (None for ``Detect``'s anchors buffer): the layer map above, then
    inside C3 ``m.K.cv1/cv2`` -> ``blocks.K.conv1/conv2`` (``cv1``/``cv2``/``cv3`` and SPPF's keep their
    names) and ``Detect``'s ``m.i`` -> ``head.preds.i``."""
    parts = key.split(".")
    layer = int(parts[1])
    rest = parts[2:]
    if layer == 24:
        if rest[0] == "anchors":
            return None
        return ".".join([LAYERS[layer], *rest[1:]])
    if rest[0] == "m":  # C3's bottlenecks
        rest = ["blocks", rest[1], {"cv1": "conv1", "cv2": "conv2"}[rest[2]], *rest[3:]]
    return ".".join([LAYERS[layer], *rest])


def hyp() -> dict:
    import yaml
    import yolov5

    path = Path(yolov5.__file__).parent / "data" / "hyps" / "hyp.scratch-low.yaml"
    return yaml.safe_load(path.read_text())


def random_yolov5(seed: int) -> nn.Module:
    """yolov5s with random BN and Detect biases, ``hyp`` attached as its train.py attaches it."""
    import yolov5
    from yolov5.models.yolo import Model

    torch.manual_seed(seed)
    model = Model(str(Path(yolov5.__file__).parent / "models" / "yolov5s.yaml"), ch=3, nc=NUM_CLASSES)
    randomise_batchnorm(model, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for pred in model.model[-1].m:
            bias = torch.randn(3, 5 + NUM_CLASSES, generator=g)
            bias[:, :4] *= 0.5  # centre near the cell, size near the anchor
            bias[:, 4:] = bias[:, 4:] - 3.0
            pred.bias.copy_(bias.flatten())
    model.hyp = hyp()
    return model


class YOLOv5Pipeline(YOLOLossPipeline):
    """detkit's pipeline with the two fixes this script measures (see the module docstring): YOLOv5's
    normalisation of the box and class terms (each positive weighs ``1 / (the positives on its level)``, the
    sums not divided again: ``sum_i mean_i``) and YOLOv5's objectness target (the detached CIoU of the
    prediction with its GT, clamped at 0, where the pipeline's ``obj_target="iou"`` takes the plain IoU)."""

    level_weight: Tensor

    def gather_positives(self, preds, assign_result, sample, batch):  # type: ignore[no-untyped-def]
        pos = super().gather_positives(preds, assign_result, sample, batch)
        ends = torch.tensor(list(preds.num_level_priors)).cumsum(0)
        level = torch.bucketize(pos.prior_idx, ends, right=True)  # (P,)
        counts = torch.bincount(level, minlength=len(ends)).float()
        self.level_weight = 1.0 / counts[level]
        return pos

    def _box_normaliser(self, pos):  # type: ignore[no-untyped-def]
        return self.level_weight, pos.box.new_tensor(1.0)

    def classification_loss(self, preds, pos, sample):  # type: ignore[no-untyped-def]
        target = F.one_hot(pos.labels.clamp(min=0), preds.num_classes).float() * pos.score[:, None]
        loss = self.loss_cls(pos.cls, target, weight=self.level_weight[:, None], avg_factor=pos.box.new_tensor(1.0),
                             reduction_override="mean")
        return self.loss_weights["cls"] * loss

    def objectness_loss(self, preds, pos, sample):  # type: ignore[no-untyped-def]
        target = torch.zeros_like(preds.obj)  # (B, N)
        target[pos.batch_idx, pos.prior_idx] = aligned_iou(pos.pred_boxes.detach(), pos.gt_boxes, mode="ciou").clamp(0)
        counts = list(preds.num_level_priors)
        per_prior = torch.tensor([w / (c * target.shape[0]) for w, c in zip(self.obj_level_weights, counts)])
        weight = per_prior.repeat_interleave(torch.tensor(counts))[None, :].expand_as(target)
        return self.loss_weights["obj"] * self.loss_obj(preds.obj, target, weight=weight, reduction_override="sum")


def fixes_in_config() -> bool:
    """Whether ``YOLOLossPipeline`` makes fixes 1 and 2 itself and the config asks for them
    (``pos_normalize="level_sum"``, ``obj_target="ciou"``): the subclass is then not needed."""
    loss = load_config(CONFIG).model.head.loss
    return loss.get("pos_normalize") == "level_sum" and loss.get("obj_target") == "ciou"


def detkit_model(state: dict[str, Tensor], fixed: bool) -> nn.Module:
    model = instantiate(load_config(CONFIG).model)
    model.load_state_dict(state, strict=True)
    if fixed and not fixes_in_config():
        model.head.loss_pipeline.__class__ = YOLOv5Pipeline
    return model


def yolov5_targets(boxes: Tensor, labels: Tensor, mask: Tensor, height: int, width: int) -> Tensor:
    """``(T, 6)`` image, class, normalised cx, cy, w, h: YOLOv5's collate format."""
    b, m = mask.nonzero(as_tuple=True)
    xyxy = boxes[b, m].double()
    xywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
    xywh = xywh / torch.tensor([width, height, width, height], dtype=torch.float64)
    return torch.cat([b[:, None].double(), labels[b, m][:, None].double(), xywh], 1).float()


def claims(model: nn.Module, targets: Tensor, shapes: list[tuple[int, int]], batch: int) -> dict[str, int]:
    """YOLOv5's (GT, anchor, cell) claims of ``targets``: how many, on how many priors, the priors claimed
    more than once (by 2+ different GTs, or twice by one GT: a centre exactly on a cell border, where the
    centre cell and its right / lower "neighbour" are the same cell), and the claims on them beyond the
    first (those one label per prior drops)."""
    owners: dict[tuple, list[int]] = {}
    targets = torch.cat([targets, torch.arange(len(targets))[:, None].float()], 1)[:, [0, 6, 2, 3, 4, 5]]
    for key, gt in prior_keys(model, targets, shapes, batch):  # GT id in the class column
        owners.setdefault(key, []).append(gt)
    multi = [gts for gts in owners.values() if len(gts) > 1]
    return {"claims": sum(len(g) for g in owners.values()), "priors": len(owners), "multi": len(multi),
            "shared": sum(len(set(g)) > 1 for g in multi), "dropped": sum(len(g) - 1 for g in multi),
            "gts": len(targets)}


def drop_shared(model: nn.Module, boxes: Tensor, labels: Tensor, mask: Tensor, shapes: list[tuple[int, int]]
                ) -> Tensor:
    """The GT mask without GTs that claim a prior twice or share one with an earlier kept GT (greedy, GT order)."""
    keep = mask.clone()
    for b in range(mask.shape[0]):
        taken: set = set()
        for j in mask[b].nonzero().flatten().tolist():
            one = torch.zeros_like(mask)
            one[b, j] = True
            mine = [key for key, _ in prior_keys(model, yolov5_targets(boxes, labels, one, HEIGHT, WIDTH), shapes,
                                                   mask.shape[0])]
            if len(set(mine)) < len(mine) or set(mine) & taken:
                keep[b, j] = False
            else:
                taken |= set(mine)
    return keep


def prior_keys(model: nn.Module, targets: Tensor, shapes: list[tuple[int, int]], batch: int) -> list[tuple]:
    """``[((level, image, anchor, row, column), class), ...]``: YOLOv5's ``build_targets`` claims in its order."""
    from yolov5.utils.loss import ComputeLoss

    p = [torch.empty(batch, 3, h, w, 5 + NUM_CLASSES) for h, w in shapes]
    tcls, _, indices, _ = ComputeLoss(model).build_targets(p, targets)
    return [((lvl, *k), c) for lvl, (b, a, gj, gi) in enumerate(indices)
            for k, c in zip(zip(b.tolist(), a.tolist(), gj.tolist(), gi.tolist()), tcls[lvl].tolist())]


def compare(res: Result, label: str, seed: int, images: Tensor, boxes: Tensor, labels: Tensor, mask: Tensor,
            fixed: bool, check: bool) -> None:
    """One run of both sides on one batch: rows for every term, the total and the gradients."""
    from yolov5.utils.loss import ComputeLoss

    b, _, h, w = images.shape
    yolo = random_yolov5(seed)
    state = {k2: v for k, v in yolo.state_dict().items() if (k2 := yolov5_to_detkit_key(k)) is not None}
    ours = detkit_model(state, fixed)
    names = {yolov5_to_detkit_key(k): k for k, _ in yolo.named_parameters()}
    if set(names) != {k for k, _ in ours.named_parameters()}:
        raise RuntimeError("the key map does not cover detkit's parameters one to one")
    yolo.train()
    ours.train()
    targets = yolov5_targets(boxes, labels, mask, h, w)
    total_u, items = ComputeLoss(yolo)(yolo(images), targets)
    total_u.backward()
    dbatch = {"images": images, "gt_boxes": boxes, "gt_labels": labels, "gt_mask": mask,
              "img_shape": torch.tensor([[h, w]] * b)}
    losses = ours.loss(dbatch)
    total_d = sum(v for k, v in losses.items() if k.startswith("loss_")) * b  # train.loss_scale="batch"
    total_d.backward()
    label += " (as configured)" if not fixed or fixes_in_config() else " (fixes 1, 2)"
    for term, ref_t in zip(TERMS, items):
        res.term(label, term, float(ref_t) * b, float(losses[f"loss_{term}"].detach()) * b, REL_TOL, check)
    res.term(label, "total", float(total_u.detach()), float(total_d.detach()), REL_TOL, check)
    grads = gradient_differences(yolo, ours, names)
    res.gradients(label, len(names), grads, names, max(grads.norm_rel, grads.floored_rel) <= REL_TOL, check)
    uparams = dict(yolo.named_parameters())
    diff = torch.cat([(p.grad - uparams[names[n]].grad).flatten() for n, p in ours.named_parameters()]).norm()
    whole = torch.cat([p.grad.flatten() for p in yolo.parameters()]).norm()
    res.notes.append(f"{label}: the whole model's gradient differs by {float(diff / whole):.1e} of its norm; worst "
                     f"elementwise difference (floor 1e-3 of the tensor's largest) {grads.elem:.1e} "
                     f"({grads.elem_name})")


def coco128_batches(size: int = REAL_SIZE) -> list[tuple[str, Tensor, Tensor]]:
    """Every coco128 image's GTs letterboxed to ``size`` x ``size`` (centred, the long side fitting):
    ``(name, xyxy (M, 4) px in multiples of 1/64, classes (M,))``."""
    from PIL import Image

    out = []
    for label_file in sorted((COCO128 / "labels" / "train2017").glob("*.txt")):
        rows = [line.split() for line in label_file.read_text().splitlines() if line.strip()]
        image = COCO128 / "images" / "train2017" / (label_file.stem + ".jpg")
        if not rows or not image.exists():
            continue
        w0, h0 = Image.open(image).size
        r = size / max(w0, h0)
        w1, h1 = round(w0 * r), round(h0 * r)
        pad = torch.tensor([(size - w1) / 2, (size - h1) / 2] * 2, dtype=torch.float64)
        t = torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)
        xywh = t[:, 1:] * torch.tensor([w1, h1, w1, h1], dtype=torch.float64)
        xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1) + pad
        out.append((label_file.stem, (torch.round(xyxy * QUANTUM) / QUANTUM).float(), t[:, 0].long()))
    return out


def pad_batch(items: list[tuple[str, Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    m = max(len(x[1]) for x in items)
    boxes = torch.zeros(len(items), m, 4)
    labels = torch.zeros(len(items), m, dtype=torch.long)
    mask = torch.zeros(len(items), m, dtype=torch.bool)
    for i, (_, b, c) in enumerate(items):
        boxes[i, :len(b)], labels[i, :len(b)], mask[i, :len(b)] = b, c, True
    return boxes, labels, mask


def letterboxed_images(names: list[str], size: int = REAL_SIZE) -> Tensor:
    from PIL import Image

    out = torch.full((len(names), 3, size, size), 114 / 255)
    for i, name in enumerate(names):
        image = Image.open(COCO128 / "images" / "train2017" / f"{name}.jpg").convert("RGB")
        r = size / max(image.size)
        w1, h1 = round(image.size[0] * r), round(image.size[1] * r)
        x = torch.frombuffer(bytearray(image.resize((w1, h1), Image.BILINEAR).tobytes()), dtype=torch.uint8)
        x = x.view(h1, w1, 3).permute(2, 0, 1).float() / 255
        top, left = (size - h1) // 2, (size - w1) // 2
        out[i, :, top:top + h1, left:left + w1] = x
    return out


def describe(what: str, c: dict[str, int]) -> str:
    return (f"{what}: {c['gts']} GTs make {c['claims']} (GT, anchor, cell) claims on {c['priors']} priors; "
            f"{c['multi']} priors claimed more than once ({100 * c['multi'] / max(c['priors'], 1):.1f}% of the "
            f"positives; {c['shared']} of them by 2+ GTs), {c['dropped']} claims that one label per prior drops "
            f"({100 * c['dropped'] / max(c['claims'], 1):.1f}% of YOLOv5's box / class terms' rows)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-real", action="store_true", help="skip the coco128 measurements")
    args = parser.parse_args()
    yolov5 = import_peer("yolov5", "`make parity` (it installs the peers)")
    if yolov5 is None:
        return 2
    warnings.filterwarnings("ignore")  # yolov5's deprecated-API warnings
    logging.getLogger("yolov5").setLevel(logging.ERROR)
    limit_threads()
    start = time.perf_counter()
    print(f"## Loss and gradient parity with yolov5 {yolov5.__version__} ComputeLoss (torch {torch.__version__}): "
          f"YOLOv5s, {BATCH} images {HEIGHT}x{WIDTH}, {NUM_CLASSES} classes, training mode, "
          f"tolerance {REL_TOL:g} relative\n")
    print(table_header("batch (detkit's normalisation)", "term", "yolov5 (x B)", "detkit (x B)", "relative difference",
                       "", right=(2, 3, 4)))
    res = Result()
    images, ubatch = make_batch(args.seed)
    boxes, labels, mask = pixel_boxes(ubatch)
    shapes = [(HEIGHT // s, WIDTH // s) for s in (8, 16, 32)]
    probe = random_yolov5(args.seed)
    counts = claims(probe, yolov5_targets(boxes, labels, mask, HEIGHT, WIDTH), shapes, BATCH)
    unshared = drop_shared(probe, boxes, labels, mask, shapes)
    counts_u = claims(probe, yolov5_targets(boxes, labels, unshared, HEIGHT, WIDTH), shapes, BATCH)
    for fixed in (True,) if fixes_in_config() else (False, True):
        compare(res, "parity batch", args.seed, images, boxes, labels, mask, fixed, check=False)
    compare(res, f"no prior claimed twice ({int(unshared.sum())} of {int(mask.sum())} GTs)", args.seed, images,
            boxes, labels, unshared, True, check=True)
    if counts_u["multi"]:
        res.ok = False
        res.notes.append(f"the batch without priors claimed twice still has {counts_u['multi']}")
    res.notes.insert(0, describe("parity batch", counts))
    if not args.no_real and (COCO128 / "labels").is_dir():
        real = coco128_batches()
        total: dict[str, int] = {}
        real_shapes = [(REAL_SIZE // s, REAL_SIZE // s) for s in (8, 16, 32)]
        for i in range(0, len(real), 16):
            chunk = real[i:i + 16]
            b_, l_, m_ = pad_batch(chunk)
            for key, value in claims(probe, yolov5_targets(b_, l_, m_, REAL_SIZE, REAL_SIZE), real_shapes,
                                     len(chunk)).items():
                total[key] = total.get(key, 0) + value
        res.notes.append(describe(f"coco128 ({len(real)} labelled images letterboxed to {REAL_SIZE})", total))
        crowded = sorted(real, key=lambda x: -len(x[1]))[:2]
        b_, l_, m_ = pad_batch(crowded)
        c = claims(probe, yolov5_targets(b_, l_, m_, REAL_SIZE, REAL_SIZE), real_shapes, len(crowded))
        res.notes.append(describe(f"coco128's 2 most crowded images ({', '.join(x[0] for x in crowded)})", c))
        compare(res, "coco128 crowded", args.seed, letterboxed_images([x[0] for x in crowded]), b_, l_, m_,
                True, check=False)
    status = res.report()
    print(f"{time.perf_counter() - start:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
