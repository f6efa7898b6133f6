"""detkit's YOLOv8 / YOLO11 / YOLO26 losses and gradients against Ultralytics' own loss code.

    .venv-bench/bin/python benchmarks/parity_losses_ultralytics.py [--models yolov8s yolo11n ...] [--seed 0]
        [--classes 5]    (or `make parity`)

For each model: a randomly initialised Ultralytics ``DetectionModel`` from its yaml (5 classes, ``--classes``)
gets random BatchNorm statistics and affine parameters, random prediction biases (class logits
about -3 rather than the init's -6 .. -12, box distances about 3 strides so that every level gets
positives; the one-to-one copies of YOLO26's branches moved off the one-to-many ones they copy)
and is converted to detkit through ``detkit.models.convert.ultralytics``;
detkit's model is built from its config (``configs/yolov8s_tal.py``, ``configs/yolo11{n,s}_tal.py``,
``configs/yolo26{n,s}.py``) and loads the converted weights with ``strict=True``. Both run in
training mode (batch-statistics BatchNorm) on the same batch: 4 images of 256 x 384 (H x W: not
square, so a width / height mix-up shows) of uniform noise, one letterboxed with grey bands (a
padded image), one without any GT; GTs from 2 px to the whole image, of classes 0-4, as Ultralytics'
dataloader hands them (``batch_idx``, ``cls``, normalised ``xywh``), and to detkit as the padded
``(B, M, 4)`` pixel ``xyxy`` tensor that Ultralytics' own ``v8DetectionLoss.preprocess`` makes
of them (so both sides train on bit-identical boxes).

Loss terms. Ultralytics returns ``loss * batch_size`` with ``loss = [box * CIoU, cls * BCE,
dfl * DFL (L1 when reg_max=1)]``, each sum divided by the sum of the targets (gains 7.5, 0.5, 1.5
from ``cfg/default.yaml``); detkit's pipeline returns the same terms, normalised the same way, with
the same gains as ``loss_box``, ``loss_cls``, ``loss_dfl`` (YOLO26: ``loss_reg``, its
``ImageL1Loss``), not multiplied by the batch size: its trainer multiplies the backward by the batch
size when the config says ``train.loss_scale="batch"`` (``common/schedules/linear_500e.py`` and
``yolo26.py`` do). So detkit's term x B is compared with Ultralytics' term. For YOLO26
(``E2ELoss``) each branch's terms are compared (Ultralytics' ``one2many.loss`` / ``one2one.loss``
times the branch's weight; detkit's head returns ``loss_*`` / ``loss_o2o_*`` already weighted), the weights
themselves (detkit's ``stat_w_o2m`` / ``stat_w_o2o``) and the total ``w * L_o2m + (1 - w) * L_o2o``
at a first and a later epoch (Ultralytics: ``criterion.update()`` called once per finished epoch;
detkit: the head's ``set_epoch(epoch, epochs)``).

Gradients: the total of each side (Ultralytics' ``loss.sum()``, as its trainer backpropagates;
detkit's ``sum(loss_*) x B``) is backpropagated and every parameter's gradient compared through
the converter's key map (parameters matched by value). The measure per parameter is
``||g_detkit - g_ultra|| / ||g_ultra||`` (Frobenius norms over the tensor), the worst over all
parameters printed with its name; tolerance 1e-4. Gradients under a floor of 1e-6 ||G_ultra|| (``G``
every gradient of the model together) are listed apart: they are the ones that are 0 in exact
arithmetic (the BatchNorm biases of C2PSA's attention and feed-forward outputs and of YOLO26's SPPF
``cv1``: a per-channel constant that the 1x1 conv and batch-statistics BatchNorm after them remove),
rounding noise of 1e-8 .. 1e-6 on both sides which no relative measure can compare, 3 orders under
the smallest real gradient; detkit's gradient of each must be under the floor too. The
notes also give the worst elementwise ``|diff| / max(|g_ultra|, 1e-3 max|g_ultra|)`` (a floor of
1e-3 of the tensor's largest entry). Pass: every loss term within 1e-4 relative, every gradient as
above.

ultralytics is installed only in the benchmark venv (``make bench-setup``); exit status 2 without
it, 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from parity_common import ROOT, Result, import_peer, limit_threads, relative, table_header, table_row, verdict
from parity_yolov8_arch import randomise_batchnorm
from torch import Tensor, nn

from detkit.config import instantiate, load_config

os.environ.setdefault("YOLO_VERBOSE", "False")  # before ultralytics is imported (in the functions below)

NUM_CLASSES = 5
HEIGHT, WIDTH = 256, 384
BATCH = 4
REL_TOL = 1e-4
ELEMENT_FLOOR = 1e-3  # elementwise measure: |diff| / max(|g|, 1e-3 * max|g|)
NORM_FLOOR = 1e-6  # gradients under 1e-6 x the model's gradient norm: 0 in exact arithmetic, on both sides
QUANTUM = 64.0  # GT corners are multiples of 1/64 px
EPOCHS = 10  # Ultralytics' hyp.epochs for the progressive weights; the later epoch checked is LATER_EPOCH
LATER_EPOCH = 6
FAMILIES = {"yolov8": "configs/yolov8{scale}_tal.py", "yolo11": "configs/yolo11{scale}_tal.py",
            "yolo26": "configs/yolo26{scale}.py"}


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------


def random_ultralytics_model(name: str, seed: int, num_classes: int = NUM_CLASSES) -> nn.Module:
    """``{name}.yaml`` (e.g. ``yolov8s``) with ``num_classes`` classes, random BN statistics and
    affine parameters, random prediction biases (box and class, every branch drawn on its own; YOLO26's
    one-to-one copies moved off the one-to-many branches they are copied from)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(f"{name}.yaml", nc=num_classes, verbose=False)
    randomise_batchnorm(model, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    detect = model.model[-1]
    with torch.no_grad():
        branches = [*detect.cv2, *detect.cv3]
        box_branches = [*detect.cv2]
        if getattr(detect, "one2one_cv2", None) is not None:
            branches += [*detect.one2one_cv2, *detect.one2one_cv3]
            box_branches += [*detect.one2one_cv2]
            for copy_, source in zip(detect.one2one_cv2.parameters(), detect.cv2.parameters()):  # deep copies at init
                copy_.add_(torch.randn(copy_.shape, generator=g) * 0.02 * (source.std() if source.numel() > 1 else 1))
            for copy_, source in zip(detect.one2one_cv3.parameters(), detect.cv3.parameters()):
                copy_.add_(torch.randn(copy_.shape, generator=g) * 0.02 * (source.std() if source.numel() > 1 else 1))
        reg_max = detect.reg_max
        # box biases: distances of about 3 strides (each level's predictions sized for its GTs, so every
        # level gets positives), class biases about -3 (scores near 0.05)
        box_bias = -0.3 * torch.arange(reg_max).repeat(4) if reg_max > 1 else torch.full((4,), 3.0)
        for branch in branches:
            pred = branch[-1]
            noise = torch.randn(pred.bias.shape, generator=g)
            pred.bias.copy_(box_bias + 0.5 * noise if branch in box_branches else noise - 3.0)
    model.names = {i: f"class_{i}" for i in range(num_classes)}
    model.args = get_cfg(overrides={"epochs": EPOCHS})  # the trainer's arguments: gains box 7.5, cls 0.5, dfl 1.5
    return model


def convert(model: nn.Module, family: str, scale: str) -> dict[str, Tensor]:
    """The Ultralytics model's ``state_dict`` through detkit's converter (as ``tools/convert_weights.py`` does),
    which must read the family and scale from the weights."""
    from detkit.models.convert.ultralytics import convert_ultralytics

    converted = convert_ultralytics(model.state_dict(), model.names)
    if (converted.family, converted.scale) != (family, scale):
        raise RuntimeError(f"the converter read {converted.family}{converted.scale} from {family}{scale} weights")
    return converted.state_dict


def converter_key_disagreements(names: dict[str, str], family: str, scale: str) -> int:
    """Parameters whose Ultralytics name found by value differs from the converter's own key map
    (``detkit_to_ultralytics_key``)."""
    from detkit.models.convert import ultralytics as conv

    layout = conv.ultralytics_layout(family, scale)
    return sum(conv.detkit_to_ultralytics_key(ours, layout) != theirs for ours, theirs in names.items())


def detkit_model(family: str, scale: str, state: dict[str, Tensor], num_classes: int = NUM_CLASSES) -> nn.Module:
    """detkit's model of ``family`` / ``scale`` from its config, holding the converted ``state`` (strict)."""
    config = ROOT / FAMILIES[family].format(scale=scale)
    if not config.exists():
        raise ImportError(f"{config.relative_to(ROOT)} does not exist yet", name="detkit")
    model = instantiate(load_config(config, [f"model.head.num_classes={num_classes}"]).model)
    model.load_state_dict(state, strict=True)
    return model


def key_map(ultra: nn.Module, ours: nn.Module) -> dict[str, str]:
    """detkit parameter name -> Ultralytics parameter name, matched by value: after conversion each
    detkit parameter is bit-identical to exactly one Ultralytics parameter (the random weights make
    the match unique; an ambiguous or missing match raises)."""
    index: dict[tuple, list[str]] = {}
    for name, p in ultra.named_parameters():
        index.setdefault((tuple(p.shape), p.detach().numpy().tobytes()), []).append(name)
    out = {}
    for name, p in ours.named_parameters():
        found = index.get((tuple(p.shape), p.detach().numpy().tobytes()), [])
        if len(found) != 1:
            raise RuntimeError(f"detkit parameter {name} matches {len(found)} Ultralytics parameters")
        out[name] = found[0]
    trained = sum(1 for p in ultra.parameters() if p.requires_grad)  # less the fixed DFL projection
    if len(set(out.values())) != len(out) or len(out) != trained:
        raise RuntimeError(f"the parameter match is not one to one ({len(out)} detkit, {trained} Ultralytics)")
    return out


# ------------------------------------------------------------------------------------------------
# batch
# ------------------------------------------------------------------------------------------------


def make_batch(seed: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Images ``(B, 3, H, W)`` and Ultralytics' training batch (``batch_idx``, ``cls``, normalised ``bboxes``)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(BATCH, 3, HEIGHT, WIDTH, generator=g)
    pad = 32  # image 3 letterboxed: grey bands of 32 px top and bottom, GTs inside the content
    images[3, :, :pad] = 114 / 255
    images[3, :, HEIGHT - pad:] = 114 / 255
    rows = []  # (image, class, x1, y1, x2, y2) in pixels

    def add(image: int, cls: int, x1: float, y1: float, x2: float, y2: float) -> None:
        rows.append([image, cls, x1, y1, x2, y2])

    # image 0: tiny to huge, every class
    add(0, 0, 100, 100, 102, 102)  # 2 px
    add(0, 1, 30.5, 200.25, 36.75, 205)  # 6 x 5 px
    add(0, 2, 250, 40, 270, 72)  # under the 32 px enlargement side
    add(0, 3, 250, 120, 370, 250)
    add(0, 4, 0, 0, WIDTH, HEIGHT)  # the whole image
    add(0, 1, 230, 110, 380, 255)  # overlapping the fourth
    for _ in range(10):  # random ones, log-uniform sides 3..300 px
        side = torch.exp(torch.empty(2).uniform_(1.1, 5.7, generator=g))
        centre = torch.rand(2, generator=g) * torch.tensor([WIDTH, HEIGHT])
        lo = (centre - side / 2).clamp(min=0)
        hi = torch.minimum(centre + side / 2, torch.tensor([WIDTH, HEIGHT]))
        add(0, int(torch.randint(5, (1,), generator=g)), *lo.tolist(), *hi.tolist())  # classes 0..4
    # image 1: three GTs
    add(1, 2, 10, 10, 120, 90)
    add(1, 0, 300, 180, 380, 250)
    add(1, 4, 200, 150, 216, 166)
    # image 2: no GT
    # image 3: letterboxed, GTs inside the content rows 32..224
    add(3, 3, 50, pad, 300, HEIGHT - pad)
    add(3, 1, 320, 100, 330, 112)
    t = torch.tensor(rows, dtype=torch.float64)
    t[:, 2:] = torch.round(t[:, 2:] * QUANTUM) / QUANTUM
    scale = torch.tensor([WIDTH, HEIGHT, WIDTH, HEIGHT], dtype=torch.float64)
    xyxy = t[:, 2:] / scale
    xywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
    batch = {"batch_idx": t[:, 0].float(), "cls": t[:, 1:2].float(), "bboxes": xywh.float()}
    return images, batch


def detkit_batch(images: Tensor, batch: dict[str, Tensor], criterion: object) -> dict[str, Tensor]:
    """detkit's batch from Ultralytics' one: GTs as ``v8DetectionLoss.preprocess`` pads and scales them."""
    targets = torch.cat((batch["batch_idx"].view(-1, 1), batch["cls"].view(-1, 1), batch["bboxes"]), 1)
    imgsz = torch.tensor([HEIGHT, WIDTH], dtype=torch.float32)
    padded = criterion.preprocess(targets, BATCH, scale_tensor=imgsz[[1, 0, 1, 0]])  # (B, M, 5) cls, xyxy
    boxes = padded[..., 1:5]
    mask = boxes.sum(-1) > 0  # Ultralytics' padding rule
    return {"images": images, "gt_boxes": boxes, "gt_labels": padded[..., 0].long(), "gt_mask": mask,
            "img_shape": torch.tensor([[HEIGHT, WIDTH]] * BATCH)}


# ------------------------------------------------------------------------------------------------
# comparison
# ------------------------------------------------------------------------------------------------


@dataclass
class GradientDifferences:
    """The worst per-parameter differences of two models' gradients (see the module docstring)."""

    norm_rel: float = 0.0  # ||g_d - g_u|| / ||g_u||, parameters whose ||g_u|| is at least the floor
    norm_name: str = ""
    floored_rel: float = 0.0  # ||g_d - g_u|| / floor, the others
    floored_ours: float = 0.0  # ||g_d|| / floor, the others (must stay under 1)
    elem: float = 0.0  # max |g_d - g_u| / max(|g_u|, 1e-3 max|g_u|) elementwise
    elem_name: str = ""
    floor: float = 0.0
    below_floor: list[str] = field(default_factory=list)  # gradients under the floor (0 in exact arithmetic)


def gradient_differences(ultra: nn.Module, ours: nn.Module, names: dict[str, str]) -> GradientDifferences:
    """Worst per-parameter norm-relative difference (and its parameter) and worst floored elementwise one.

    The norm measure's floor is ``NORM_FLOOR`` x the whole model's gradient norm (Ultralytics' side): a
    parameter whose gradient is 0 in exact arithmetic (a BatchNorm bias whose constant a 1x1 conv and a
    batch-statistics BatchNorm after it remove) has a rounding-noise gradient of ~1e-7 on both sides,
    which no relative measure of its own can compare; parameters under the floor are listed.
    """
    uparams = dict(ultra.named_parameters())
    pairs = []
    for name, p in ours.named_parameters():
        ref, got = uparams[names[name]].grad, p.grad
        ref = torch.zeros_like(p) if ref is None else ref.double()
        got = torch.zeros_like(p) if got is None else got.double()
        pairs.append((name, ref.double(), got.double()))
    out = GradientDifferences()
    out.floor = NORM_FLOOR * float(torch.stack([ref.norm() for _, ref, _ in pairs]).norm())
    for name, ref, got in pairs:
        diff = got - ref
        ref_norm = float(ref.norm())
        if ref_norm < out.floor:
            out.below_floor.append(f"{name} ({ref_norm:.1e} / {float(got.norm()):.1e})")
        norm_rel = float(diff.norm()) / max(ref_norm, out.floor, 1e-30)
        if ref_norm < out.floor:
            out.floored_rel = max(out.floored_rel, norm_rel)
            out.floored_ours = max(out.floored_ours, float(got.norm()) / out.floor)
            continue
        floor = ELEMENT_FLOOR * float(ref.abs().max())
        elem = float((diff.abs() / ref.abs().clamp(min=floor)).max()) if floor > 0 else (
            0.0 if float(diff.abs().max()) == 0 else float("inf"))
        if norm_rel > out.norm_rel:
            out.norm_rel, out.norm_name = norm_rel, name
        if elem > out.elem:
            out.elem, out.elem_name = elem, name
    return out


def detkit_terms(losses: dict[str, Tensor], prefix: str) -> dict[str, tuple[str, float]]:
    """``{"box", "cls", "dfl"}`` -> detkit's key and term x B (``prefix`` ``loss_`` or ``loss_o2o_``); the DFL
    slot is ``loss_dfl`` or, DFL-free, the L1 term (YOLO26's ``loss_reg``)."""
    out: dict[str, tuple[str, float]] = {}
    for key, value in losses.items():
        if not key.startswith(prefix) or (prefix == "loss_" and key.startswith("loss_o2o_")):
            continue
        term = key[len(prefix):]
        slot = term if term in ("box", "cls") else "dfl"
        if slot in out:
            raise RuntimeError(f"two detkit terms for Ultralytics' {slot} slot: {sorted(losses)}")
        out[slot] = (key, float(value.detach()) * BATCH)
    return out


def branch_loss(criterion: Any, preds: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, int]:
    """Ultralytics' ``v8DetectionLoss.loss`` (the gained terms x the batch size) and its number of positives."""
    (fg_mask, *_), loss, _ = criterion.get_assigned_targets_and_loss(preds, batch)
    return loss * preds["boxes"].shape[0], int(fg_mask.sum())


def ultra_terms(loss: Tensor) -> dict[str, float]:
    """Ultralytics' loss vector ``(box, cls, dfl)`` (the last slot is the L1 loss when ``reg_max=1``)."""
    return dict(zip(("box", "cls", "dfl"), (float(v) for v in loss.detach())))


def run_case(name: str, seed: int, epochs_checked: list[int], num_classes: int = NUM_CLASSES) -> Result:
    family, scale = name[:-1], name[-1]
    res = Result()
    start = time.perf_counter()
    ultra = random_ultralytics_model(name, seed, num_classes)
    state = convert(ultra, family, scale)
    images, ubatch = make_batch(seed)
    e2e = family == "yolo26"
    ours = detkit_model(family, scale, state, num_classes)
    names = key_map(ultra, ours)
    disagreements = converter_key_disagreements(names, family, scale)
    res.ok &= disagreements == 0
    res.notes.append(f"{name}: the converter's key map (detkit_to_ultralytics_key) and the match by value disagree on "
                     f"{disagreements} of {len(names)} parameters{'' if disagreements == 0 else ' FAIL'}")
    ultra_m = ultra
    for epoch in epochs_checked:  # the same models and batch at each epoch; only the branch weights move
        ultra_m.zero_grad(set_to_none=True)
        ours.zero_grad(set_to_none=True)
        ultra_m.train()
        ours.train()
        criterion = ultra_m.init_criterion()  # a fresh criterion (updates = 0), moved to the epoch below
        one2many = criterion.one2many if e2e else criterion
        dbatch = detkit_batch(images, ubatch, one2many)
        if e2e:
            for _ in range(epoch):  # Ultralytics: one update per finished epoch
                criterion.update()
            ours.head.set_epoch(epoch, EPOCHS)
        # Ultralytics
        preds = ultra_m(images)
        parsed = one2many.parse_output(preds)
        if e2e:  # each branch's terms times its weight, as detkit's head returns them
            o2m, fg_o2m = branch_loss(one2many, parsed["one2many"], ubatch)
            o2o, fg_o2o = branch_loss(criterion.one2one, parsed["one2one"], ubatch)
            total_u = o2m * criterion.o2m + o2o * criterion.o2o
            weights_u = (criterion.o2m, criterion.o2o)
            branches_u = {"o2m": ultra_terms(o2m * criterion.o2m), "o2o": ultra_terms(o2o * criterion.o2o)}
            positives_u = {"o2m": fg_o2m, "o2o": fg_o2o}
        else:
            total_u, fg = branch_loss(one2many, parsed, ubatch)
            branches_u = {"o2m": ultra_terms(total_u)}
            positives_u = {"o2m": fg}
        total_u.sum().backward()
        # detkit
        losses = ours.loss(dbatch)
        total_d = sum(v for k, v in losses.items() if k.startswith("loss_")) * BATCH  # train.loss_scale="batch"
        total_d.backward()
        branches_d = {"o2m": detkit_terms(losses, "loss_")}
        if e2e:
            branches_d["o2o"] = detkit_terms(losses, "loss_o2o_")
        label = f"{name}" + (f" epoch {epoch}" if e2e else "")
        if e2e:
            weights_d = (float(losses["stat_w_o2m"]), float(losses["stat_w_o2o"]))
            rel = max(relative(d, u) for d, u in zip(weights_d, weights_u))
            res.ok &= rel <= REL_TOL
            res.rows.append(table_row(label, "branch weights o2m / o2o", f"{weights_u[0]:.6f} / {weights_u[1]:.6f}",
                                      f"{weights_d[0]:.6f} / {weights_d[1]:.6f}", f"{rel:.1e}",
                                      verdict(rel <= REL_TOL)))
        for branch, count in positives_u.items():
            prefix = "stat_o2o_" if branch == "o2o" else "stat_"
            ours_count = round(float(losses[f"{prefix}pos_per_gt"]) * float(losses["stat_num_gt"]))
            res.ok &= ours_count == count
            res.rows.append(table_row(label, f"{branch + ' ' if e2e else ''}positives", str(count), str(ours_count),
                                      str(abs(ours_count - count)), verdict(ours_count == count)))
        loss_names = dict(zip(("box", "cls", "dfl"), one2many.loss_names))  # box_loss, cls_loss, dfl_loss | l1_loss
        for branch, terms in branches_u.items():
            for term, ref in terms.items():
                key, got = branches_d[branch].get(term, ("missing", float("nan")))
                res.term(label, f"{branch + ' ' if e2e else ''}{loss_names[term]} = {key}", ref, got, REL_TOL)
        res.term(label, "total", float(total_u.sum().detach()), float(total_d.detach()), REL_TOL)
        grads = gradient_differences(ultra_m, ours, names)
        res.gradients(label, len(names) - len(grads.below_floor), grads, names, grads.norm_rel <= REL_TOL)
        if grads.below_floor:
            passed = grads.floored_ours < 1.0
            res.ok &= passed
            res.rows.append(table_row(label, f"gradients of {len(grads.below_floor)} parameters under the floor "
                                             f"{grads.floor:.1e} (0 in exact arithmetic): largest detkit norm / floor "
                                             f"{grads.floored_ours:.1e} (< 1), difference / floor", "", "",
                                      f"{grads.floored_rel:.1e}", verdict(passed)))
        res.notes.append(f"{label}: worst elementwise gradient difference (floor 1e-3 of the tensor's largest) "
                         f"{grads.elem:.1e} ({grads.elem_name})")
        if grads.below_floor:
            res.notes.append(f"{label}: {len(grads.below_floor)} gradients under the floor, measured against it "
                             f"(Ultralytics / detkit norms): {', '.join(grads.below_floor)}")
    res.notes.append(f"{name}: {time.perf_counter() - start:.1f} s")
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["yolov8s", "yolo11n", "yolo11s", "yolo26n", "yolo26s"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=NUM_CLASSES, help="the heads' class count (at least 5)")
    args = parser.parse_args()
    ultralytics = import_peer("ultralytics")
    if ultralytics is None:
        return 2
    limit_threads()
    print(f"## Loss and gradient parity with Ultralytics {ultralytics.__version__} (torch {torch.__version__}): "
          f"{BATCH} images {HEIGHT}x{WIDTH}, {args.classes} classes (GTs of 0..4), training mode, tolerance "
          f"{REL_TOL:g} relative\n")
    print("Ultralytics' terms are gain x loss x batch size; detkit's pipeline returns gain x loss and its trainer "
          "multiplies the backward by the batch size under train.loss_scale=\"batch\" (the YOLO schedules), so "
          "detkit's terms are shown x B. YOLO26: both sides' branch terms times the branch weight.\n")
    print(table_header("model", "term", "Ultralytics", "detkit (x B)", "relative difference", "", right=(2, 3, 4)))
    every = Result()
    for name in args.models:
        epochs = [0, LATER_EPOCH] if name.startswith("yolo26") else [0]
        try:
            res = run_case(name, args.seed, epochs, args.classes)
        except ImportError as e:
            print(table_row(name, f"not available: {e}", "", "", "", "skipped"))
            continue
        for row in res.rows:
            print(row, flush=True)
        every.notes += res.notes
        every.ok &= res.ok
    return every.report()


if __name__ == "__main__":
    sys.exit(main())
