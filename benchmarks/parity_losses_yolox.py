"""detkit's YOLOX-s loss and gradients against the ``yolox`` package's own ``YOLOXHead.get_losses``.

    .venv-bench/bin/python benchmarks/parity_losses_yolox.py [--seed 0]    (or `make parity`)

A randomly initialised yolox 0.3.0 YOLOX-s (``YOLOX(YOLOPAFPN(0.33, 0.5), YOLOXHead(80, 0.5))``, BatchNorm
eps 1e-3 / momentum 0.03 and the 1% prediction biases as its ``Exp.get_model`` sets them) gets random
BatchNorm statistics and affine parameters and random prediction biases (class logits about -3, objectness
about -2, box sizes about 3 strides, so that SimOTA picks positives on every level); its state dict goes
through the key map below into detkit's model of ``configs/yolox_s_simota.py`` (``strict=True``). Both run
in training mode on the batch of ``parity_losses_ultralytics.py`` (4 images of 256 x 384, GTs from 2 px to
the whole image, a letterboxed image, an image without GT; corners multiples of 1/64 px, so both sides see
bit-identical boxes): YOLOX as ``YOLOX.forward(images, labels)`` calls ``YOLOXHead.get_losses`` (labels
``(B, M, 5)`` class, cx, cy, w, h in pixels, zero rows as padding), detkit as ``Detector.loss``.

Terms, mapped one to one (both sides divide every term by the batch's number of positives, at least 1):

* YOLOX ``iou_loss`` = 5 x sum(1 - IoU**2) / num_fg  <->  detkit ``loss_box`` (``IoULoss(mode="iou",
  penalty="square")``, weight 5, divided by the positives);
* ``conf_loss`` = sum over every prior of BCE(obj, fg) / num_fg  <->  ``loss_obj`` (``obj_target="one"``,
  ``obj_normalize="num_pos"``);
* ``cls_loss`` = sum BCE(cls, one_hot x IoU of the matched prediction) / num_fg  <->  ``loss_cls``
  (``cls_target="iou"``);
* ``l1_loss`` (``use_l1=True``: YOLOX's last 15 epochs) = sum |raw box outputs - (gt centre / stride - cell,
  log(gt size / stride + 1e-8))| / num_fg  <->  ``loss_reg`` (``L1Loss`` on ``YOLOXCoder.encode``d targets,
  on from ``set_epoch(285, 300)``: ``reg_last_epochs=15``); without it both give 0;
* ``total_loss`` = their sum, which YOLOX backpropagates as is (no batch-size factor; detkit's
  ``loss_scale="mean"`` in ``common/schedules/yolox_300e.py``)  <->  the sum of detkit's ``loss_*``.

Gradients: both totals are backpropagated and every parameter's gradient compared through the key map,
with ``parity_losses_ultralytics.gradient_differences`` (norm-relative per parameter, floored at 1e-5 of the
model's gradient norm). Pass: every term, the total and every gradient within 1e-4 relative.

yolox is installed only in the benchmark venv (``make parity`` installs it); exit status 2 without it, 1 when
a check fails.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings

import torch
from parity_common import ROOT, Result, import_peer, limit_threads, table_header
from parity_losses_ultralytics import BATCH, HEIGHT, QUANTUM, REL_TOL, WIDTH, gradient_differences, make_batch
from parity_yolov8_arch import randomise_batchnorm
from torch import Tensor, nn

from detkit.config import instantiate, load_config

CONFIG = ROOT / "configs" / "yolox_s_simota.py"
NUM_CLASSES = 80
EPOCHS, L1_EPOCH = 300, 285  # detkit's set_epoch: reg_last_epochs=15 switches L1 on from epoch 285
TERMS = (("iou_loss", "loss_box"), ("conf_loss", "loss_obj"), ("cls_loss", "loss_cls"), ("l1_loss", "loss_reg"))

# yolox module prefix -> detkit's (CSPDarknet arch="yolox": stage 1 is the Focus stem; CSPPAN layout "yolox")
PREFIXES = {
    "backbone.backbone.stem.": "backbone.stem.",
    "backbone.backbone.dark2.": "backbone.stages.1.",
    "backbone.backbone.dark3.": "backbone.stages.2.",
    "backbone.backbone.dark4.": "backbone.stages.3.",
    "backbone.backbone.dark5.": "backbone.stages.4.",
    "backbone.lateral_conv0.": "neck.reduce.0.",
    "backbone.C3_p4.": "neck.td_blocks.0.",
    "backbone.reduce_conv1.": "neck.reduce.1.",
    "backbone.C3_p3.": "neck.td_blocks.1.",
    "backbone.bu_conv2.": "neck.down.0.",
    "backbone.C3_n3.": "neck.bu_blocks.0.",
    "backbone.bu_conv1.": "neck.down.1.",
    "backbone.C3_n4.": "neck.bu_blocks.1.",
    "head.reg_convs.": "head.box_convs.",
    "head.reg_preds.": "head.box_preds.",
}
def yolox_to_detkit_key(key: str) -> str:
    """A yolox 0.3.0 YOLOX-s state-dict key -> detkit's (``configs/yolox_s_simota.py``): the prefixes above, then
    inside a block CSPLayer's conv1/conv2/conv3/m.K -> C3's cv1/cv2/cv3/blocks.K and SPPBottleneck's conv1/conv2
    -> SPPFBlock's cv1/cv2 (YOLOX's parallel 5/9/13 pools equal SPPF's three chained 5 x 5 pools); the
    bottlenecks keep conv1/conv2."""
    for old, new in PREFIXES.items():
        if key.startswith(old):
            key = new + key[len(old):]
            break
    else:
        if not key.startswith("head."):
            raise KeyError(f"no detkit name for yolox key {key}")
    key = re.sub(r"\.m\.(\d+)\.", r".blocks.\1.", key)
    parts = key.split(".")
    # the block-level convs (not those inside a bottleneck): conv1/2/3 -> cv1/2/3
    for i, part in enumerate(parts):
        if re.fullmatch(r"conv[123]", part) and (i < 2 or parts[i - 2] != "blocks"):
            parts[i] = "cv" + part[-1]
    return ".".join(parts)


def random_yolox(seed: int) -> nn.Module:
    """YOLOX-s as yolox 0.3.0's ``Exp.get_model`` builds it, with random BN and prediction biases."""
    from yolox.models import YOLOPAFPN, YOLOX, YOLOXHead

    torch.manual_seed(seed)
    model = YOLOX(YOLOPAFPN(0.33, 0.50), YOLOXHead(NUM_CLASSES, 0.50))
    for m in model.modules():  # Exp.get_model's init_yolo
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    model.head.initialize_biases(1e-2)
    randomise_batchnorm(model, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for pred in model.head.cls_preds:
            pred.bias.copy_(torch.randn(pred.bias.shape, generator=g) - 3.0)
        for pred in model.head.obj_preds:
            pred.bias.copy_(torch.randn(pred.bias.shape, generator=g) * 0.5 - 2.0)
        for pred in model.head.reg_preds:  # centre offset ~0.5 cell, size ~3 strides
            pred.bias.copy_(torch.tensor([0.5, 0.5, 1.1, 1.1]) + 0.3 * torch.randn(4, generator=g))
    return model


def detkit_model(state: dict[str, Tensor]) -> nn.Module:
    model = instantiate(load_config(CONFIG).model)
    model.load_state_dict(state, strict=True)
    return model


def pixel_boxes(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """The parity batch's GTs as pixel ``xyxy (B, M, 4)`` (exact multiples of 1/64 px), labels ``(B, M)``
    and mask ``(B, M)``, each image's GTs first and zero rows after them."""
    xywh = batch["bboxes"].double() * torch.tensor([WIDTH, HEIGHT, WIDTH, HEIGHT], dtype=torch.float64)
    xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    xyxy = torch.round(xyxy * QUANTUM) / QUANTUM  # undo the normalisation's rounding
    idx = batch["batch_idx"].long()
    m = int(torch.bincount(idx, minlength=BATCH).max())
    boxes = torch.zeros(BATCH, m, 4, dtype=torch.float64)
    labels = torch.zeros(BATCH, m, dtype=torch.long)
    mask = torch.zeros(BATCH, m, dtype=torch.bool)
    for b in range(BATCH):
        rows = (idx == b).nonzero().flatten()
        boxes[b, :len(rows)] = xyxy[rows]
        labels[b, :len(rows)] = batch["cls"][rows, 0].long()
        mask[b, :len(rows)] = True
    return boxes.float(), labels, mask


def run(seed: int) -> Result:
    res = Result()
    start = time.perf_counter()
    images, ubatch = make_batch(seed)
    boxes, labels, mask = pixel_boxes(ubatch)
    cxcywh = torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1)
    yolox_labels = torch.cat([labels[..., None].float(), cxcywh], -1) * mask[..., None]  # (B, M, 5)
    dbatch = {"images": images, "gt_boxes": boxes, "gt_labels": labels, "gt_mask": mask,
              "img_shape": torch.tensor([[HEIGHT, WIDTH]] * BATCH)}
    for use_l1 in (False, True):
        yolox = random_yolox(seed)
        state = {yolox_to_detkit_key(k): v for k, v in yolox.state_dict().items()}
        ours = detkit_model(state)
        names = {yolox_to_detkit_key(k): k for k, _ in yolox.named_parameters()}
        if set(names) != {k for k, _ in ours.named_parameters()}:
            raise RuntimeError("the key map does not cover detkit's parameters one to one")
        yolox.train()
        ours.train()
        yolox.head.use_l1 = use_l1
        ours.head.loss_pipeline.set_epoch(L1_EPOCH if use_l1 else 0, EPOCHS)
        out = yolox(images, yolox_labels)
        out["total_loss"].backward()
        losses = ours.loss(dbatch)
        total_d = sum(v for k, v in losses.items() if k.startswith("loss_"))
        total_d.backward()
        label = "YOLOX-s" + (" + L1" if use_l1 else "")
        for yname, dname in TERMS:  # relative(0, 0) is 0: l1_loss / loss_reg without L1
            res.term(label, f"{yname} / {dname}", float(torch.as_tensor(out[yname]).detach()),
                     float(losses[dname].detach()), REL_TOL)
        res.term(label, "total", float(out["total_loss"].detach()), float(total_d.detach()), REL_TOL)
        num_fg = float(out["num_fg"]) * int(mask.sum())  # YOLOX reports positives per GT
        num_pos = float(losses["stat_pos_per_gt"]) * int(mask.sum())
        res.notes.append(f"{label}: positives YOLOX {num_fg:.0f}, detkit {num_pos:.0f}")
        grads = gradient_differences(yolox, ours, names)
        res.gradients(label, len(names), grads, names, max(grads.norm_rel, grads.floored_rel) <= REL_TOL)
        res.notes.append(f"{label}: worst elementwise gradient difference (floor 1e-3 of the tensor's largest) "
                         f"{grads.elem:.1e} ({grads.elem_name}); norm floor {grads.floor:.1e}"
                         + (f"; {len(grads.below_floor)} gradients under it, worst difference / floor "
                            f"{grads.floored_rel:.1e}" if grads.below_floor else ""))
    res.notes.append(f"{time.perf_counter() - start:.1f} s")
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    yolox = import_peer("yolox", "`make parity` (it installs the peers)")
    if yolox is None:
        return 2
    warnings.filterwarnings("ignore", message=".*torch.cuda.amp.autocast.*")  # YOLOX's CPU-irrelevant autocast
    limit_threads()
    print(f"## Loss and gradient parity with yolox {yolox.__version__} YOLOXHead.get_losses (torch "
          f"{torch.__version__}): YOLOX-s, {BATCH} images {HEIGHT}x{WIDTH}, {NUM_CLASSES} classes, training mode, "
          f"tolerance {REL_TOL:g} relative\n")
    print(table_header("model", "term (yolox / detkit)", "yolox", "detkit", "relative difference", "", right=(2, 3, 4)))
    return run(args.seed).report()


if __name__ == "__main__":
    sys.exit(main())
