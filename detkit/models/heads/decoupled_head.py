"""Anchor-free decoupled head (YOLOX, YOLOv6/v8, RTMDet): separate classification and box branches.

Per level: an optional 1x1 stem (YOLOX), then a classification branch and a box branch of
``num_convs`` 3x3 ConvBNActs each (depthwise-separable with ``depthwise``), ending in 1x1 convs
to C class logits and R box parameters (``coder.num_params``: 4 ltrb distances for
``DistanceCoder`` / ``YOLOXCoder``, ``4 * reg_max`` bin logits for ``DFLCoder``), plus an optional
1x1 objectness conv on the box branch (YOLOX). One point prior per location
(``PointGenerator``). The layouts of YOLOv8, YOLO11 and YOLOX are arguments:

    YOLOv8-s: stem_channels=None, box_channels=64, cls_channels=128, coder=DFLCoder(16), bias_init="yolov8"
    YOLO11-n: as YOLOv8 (box 64, cls 80 from the neck's 64 channels) with cls_branch="dwconv", box_bias=2.0
    YOLOX-s:  stem_channels=128, objectness=True, coder=YOLOXCoder(), bias_init="prior_prob"

A level's raw map is the concatenation ``[box (R), obj (0 or 1), cls (C)]`` along channels;
:meth:`split_level` names its parts for the loss pipeline and post-processing.

YOLOv10's consistent dual assignment (``one2one=True``): a second set of branches of the same
layout runs on the (detached) same features and is trained beside the first by ``one2one_loss``,
the same rule at ``topk=1``; each object then has one confident prediction, so inference from it
needs no NMS (``branch="one2one"``, ``nms=False``, the defaults of such a head). The raw map then
holds both: ``[one-to-many K | one-to-one K]``. The total loss is ``w_o2m * L_o2m + w_o2o * L_o2o``,
the weights from ``branch_weights`` (:mod:`detkit.models.heads.branch_weights`): 1 and 1 (YOLOv10),
or YOLO26's progressive weights, which the trainer moves each epoch (:meth:`DecoupledHead.set_epoch`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detkit.models.heads.branch_weights import BranchWeights, FixedWeights
from detkit.models.heads.dense_head import DenseHead
from detkit.models.layers import ConvBNAct, conv_unit, set_batchnorm

__all__ = ["BIAS_INITS", "DecoupledHead"]

BIAS_INITS = ("prior_prob", "yolov8")
# The class branch's convs: "conv" (3x3 ConvBNActs), "dwconv" (YOLO11+: depthwise 3x3 + pointwise 1x1).
CLS_BRANCHES = ("conv", "dwconv")
# Statistics of the one-to-one branch worth logging beside the one-to-many branch's (as stat_o2o_*).
O2O_STATS = ("stat_pos_per_gt", "stat_gt_no_pos", "stat_pos_iou")


def _module_list(module: nn.Module) -> nn.ModuleList:
    """``module`` as the ``nn.ModuleList`` a branch part is (a typed view for the checker)."""
    assert isinstance(module, nn.ModuleList), type(module)
    return module


def _bias(conv: nn.Module) -> Tensor:
    """The bias of one of the head's 1x1 prediction convs (all are built with one)."""
    assert isinstance(conv, nn.Conv2d) and conv.bias is not None
    return conv.bias


def _per_level(value: int | Sequence[int], levels: int, name: str) -> list[int]:
    values = [int(value)] * levels if isinstance(value, int) else [int(v) for v in value]
    if len(values) != levels or min(values) <= 0:
        raise ValueError(f"{name} must be a positive int or one per level ({levels}), got {value}")
    return values


class DecoupledHead(DenseHead):
    """Decoupled classification / box head on point priors.

    Args:
        num_classes: C.
        in_channels: channels per input level, or None to read them from the neck.
        prior_generator: a ``PointGenerator`` (one prior per location).
        coder: ``DistanceCoder``, ``YOLOXCoder`` or ``DFLCoder(reg_max)``.
        loss: the loss pipeline (``YOLOLossPipeline``), or None for an inference-only head.
        stem_channels: width of a 1x1 stem conv per level (YOLOX: 256 x width), or None for none.
        cls_channels: width of the class branch's 3x3 convs (an int or one per level). None: the
            stem's width, or without a stem YOLOv8's rule from the first level's input ``c0``:
            ``max(c0, min(C, 100))``.
        box_channels: width of the box branch's 3x3 convs (an int or one per level). None: the
            stem's width, or without a stem ``max(16, c0 // 4, R)``.
        num_convs: 3x3 convs per branch (>= 1).
        depthwise: depthwise-separable 3x3 convs (YOLOX-Nano style).
        cls_branch: ``"conv"`` (3x3 ConvBNActs, as the box branch) or ``"dwconv"``: YOLO11's and
            YOLO26's class branch, each conv a depthwise 3x3 ConvBNAct then a 1x1 ConvBNAct to the
            branch width (Ultralytics' ``DWConv`` + ``Conv``); the box branch keeps full 3x3 convs.
        act: activation of the stem and branch convs.
        objectness: predict objectness from the box branch (YOLOX).
        bias_init: ``"prior_prob"`` (class and objectness biases ``logit(prior_prob)``, as
            YOLOX / RTMDet) or ``"yolov8"`` (box biases 1, class biases
            ``log(5 / C / (bias_init_size / stride)**2)``: about 5 objects per image).
        prior_prob: see ``bias_init``.
        bias_init_size: see ``bias_init``.
        box_bias: the box predictions' bias (None: ``bias_init``'s: 1 for ``"yolov8"``, PyTorch's
            default init for ``"prior_prob"``); Ultralytics 8.4 sets 2 (YOLO11, YOLO26 configs).
        norm_eps: BatchNorm eps of the head's convs (YOLOv8 / YOLOX: 1e-3; PyTorch's default 1e-5).
        norm_momentum: BatchNorm momentum (YOLOv8 / YOLOX: 0.03; PyTorch's default 0.1).
        score_thr: least class score of a detection.
        nms_iou_thr: IoU above which NMS drops the lower-scored box of a class.
        nms_pre: candidates kept (top scores) before NMS.
        max_per_img: detections kept per image.
        multi_label: a prior may give one detection per class above ``score_thr`` (else its best class only).

        one2one: add YOLOv10's one-to-one branches (see the module docstring).
        one2one_loss: their loss pipeline (YOLOv10: the one-to-many pipeline's rule at ``topk=1``);
            its outputs are returned as ``loss_o2o_*`` / ``stat_o2o_*``.
        branch_weights: with ``one2one_loss``, the weights of the two branches' losses per epoch
            (:class:`~detkit.models.heads.branch_weights.FixedWeights` 1 and 1 by default, YOLO26:
            ``ProgressiveWeights(start=0.8, end=0.1)``); ``loss()`` returns each branch's losses times
            its weight and the weights as ``stat_w_o2m`` / ``stat_w_o2o``.
        branch: the branch inference reads: ``"one2many"``, or ``"one2one"`` (default with
            ``one2one``).
        nms: run NMS at inference (default: not on the one-to-one branch).

    Shapes: ``forward([(B, in_i, H_i, W_i)]) -> [(B, K, H_i, W_i)]`` with ``K = R + O + C`` (O = 1
    with objectness), twice that with ``one2one``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int] | None = None,
        *,
        prior_generator: Any,
        coder: Any,
        loss: nn.Module | None = None,
        stem_channels: int | None = None,
        cls_channels: int | Sequence[int] | None = None,
        box_channels: int | Sequence[int] | None = None,
        num_convs: int = 2,
        depthwise: bool = False,
        cls_branch: str = "conv",
        act: str = "silu",
        objectness: bool = False,
        bias_init: str = "prior_prob",
        prior_prob: float = 0.01,
        bias_init_size: int = 640,
        box_bias: float | None = None,
        norm_eps: float = 1e-5,
        norm_momentum: float = 0.1,
        one2one: bool = False,
        one2one_loss: nn.Module | None = None,
        branch_weights: BranchWeights | None = None,
        branch: str | None = None,
        score_thr: float = 0.001,
        nms_iou_thr: float = 0.65,
        nms_pre: int = 30000,
        max_per_img: int = 300,
        multi_label: bool = True,
        nms: bool | None = None,
    ) -> None:
        super().__init__(num_classes, prior_generator=prior_generator, coder=coder, loss=loss,
                         score_thr=score_thr, nms_iou_thr=nms_iou_thr, nms_pre=nms_pre,
                         max_per_img=max_per_img, multi_label=multi_label,
                         nms=(not one2one) if nms is None else nms)
        if one2one_loss is not None and not one2one:
            raise ValueError("one2one_loss trains the one-to-one branches: set one2one=True")
        self.branches = ("one2many", "one2one") if one2one else ("one2many",)
        self.branch = branch if branch is not None else self.branches[-1]
        self._check_branch(self.branch)
        self.one2one_pipeline = one2one_loss
        if branch_weights is not None and one2one_loss is None:
            raise ValueError("branch_weights weigh the one-to-many and one-to-one losses: set one2one_loss too")
        self.branch_weights = branch_weights if branch_weights is not None else FixedWeights()
        self.loss_weights_now = self.branch_weights(0, 1)  # (one-to-many, one-to-one) until set_epoch
        if self.num_base_priors != 1:
            raise ValueError(f"DecoupledHead uses one point prior per location (PointGenerator); "
                             f"{prior_generator!r} has {self.num_base_priors}")
        if bias_init not in BIAS_INITS:
            raise ValueError(f"unknown bias_init {bias_init!r}; accepted: {', '.join(BIAS_INITS)}")
        if cls_branch not in CLS_BRANCHES:
            raise ValueError(f"unknown cls_branch {cls_branch!r}; accepted: {', '.join(CLS_BRANCHES)}")
        if cls_branch == "dwconv" and depthwise:
            raise ValueError("depthwise=True already makes both branches depthwise-separable; "
                             "cls_branch='dwconv' is YOLO11's class branch beside full 3x3 box convs: pick one")
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
        if not isinstance(num_convs, int) or num_convs < 1:
            raise ValueError(f"num_convs must be an int >= 1, got {num_convs!r}")
        self.num_box_params = int(coder.num_params)
        self.stem_channels = stem_channels
        self.cls_channels = cls_channels
        self.box_channels = box_channels
        self.num_convs = num_convs
        self.depthwise = depthwise
        self.cls_branch = cls_branch
        self.box_bias = box_bias
        self.act = act
        self.objectness = objectness
        self.bias_init = bias_init
        self.prior_prob = prior_prob
        self.bias_init_size = bias_init_size
        self.norm_eps = norm_eps
        self.norm_momentum = norm_momentum
        if in_channels is not None:
            self.bind(in_channels)

    @property
    def has_objectness(self) -> bool:
        return self.objectness

    def _branch_widths(self, in_channels: list[int]) -> tuple[list[int], list[int]]:
        levels = len(in_channels)
        if self.stem_channels is not None:
            default_cls = default_box = self.stem_channels
        else:
            c0 = in_channels[0]
            default_box = max(16, c0 // 4, self.num_box_params)
            default_cls = max(c0, min(self.num_classes, 100))
        cls = self.cls_channels if self.cls_channels is not None else default_cls
        box = self.box_channels if self.box_channels is not None else default_box
        return _per_level(cls, levels, "cls_channels"), _per_level(box, levels, "box_channels")

    def _branch(self, cin: int, width: int, depthwise: bool) -> nn.Sequential:
        convs = [conv_unit(cin if i == 0 else width, width, 3, act=self.act, depthwise=depthwise)
                 for i in range(self.num_convs)]
        return nn.Sequential(*convs)

    @property
    def level_channels(self) -> int:
        """K: raw channels of one branch per level, ``R + O + C``."""
        return self.num_box_params + int(self.objectness) + self.num_classes

    def _branch_set(self, branch_in: list[int], cls_w: list[int], box_w: list[int]) -> nn.ModuleDict:
        """One branch's layers per level: class and box convs, their 1x1 predictions, objectness."""
        parts = nn.ModuleDict(dict(
            cls_convs=nn.ModuleList(self._branch(c, w, self.depthwise or self.cls_branch == "dwconv")
                                    for c, w in zip(branch_in, cls_w)),
            box_convs=nn.ModuleList(self._branch(c, w, self.depthwise) for c, w in zip(branch_in, box_w)),
            cls_preds=nn.ModuleList(nn.Conv2d(w, self.num_classes, 1) for w in cls_w),
            box_preds=nn.ModuleList(nn.Conv2d(w, self.num_box_params, 1) for w in box_w),
        ))
        if self.objectness:
            parts["obj_preds"] = nn.ModuleList(nn.Conv2d(w, 1, 1) for w in box_w)
        return parts

    def _build(self, in_channels: list[int]) -> None:
        self._check_levels(in_channels)
        cls_w, box_w = self._branch_widths(in_channels)
        if self.stem_channels is not None:
            self.stems = nn.ModuleList(ConvBNAct(c, self.stem_channels, 1, act=self.act) for c in in_channels)
            branch_in = [self.stem_channels] * len(in_channels)
        else:
            self.stems = nn.ModuleList(nn.Identity() for _ in in_channels)
            branch_in = list(in_channels)
        main = self._branch_set(branch_in, cls_w, box_w)
        self.cls_convs, self.box_convs = _module_list(main["cls_convs"]), _module_list(main["box_convs"])
        self.cls_preds, self.box_preds = _module_list(main["cls_preds"]), _module_list(main["box_preds"])
        self.obj_preds = _module_list(main["obj_preds"]) if self.objectness else None
        self.one2one_branch = self._branch_set(branch_in, cls_w, box_w) if "one2one" in self.branches else None
        self.out_channels = [self.level_channels * len(self.branches)] * len(in_channels)
        set_batchnorm(self, self.norm_eps, self.norm_momentum)
        self._init_biases()

    def _branch_modules(self, branch: str) -> dict[str, nn.ModuleList]:
        """The layers of ``branch`` by part name; ``obj_preds`` only with objectness."""
        if branch == "one2one":
            assert self.one2one_branch is not None  # built whenever "one2one" is one of the branches
            return {k: _module_list(v) for k, v in self.one2one_branch.items()}
        parts = dict(cls_convs=self.cls_convs, box_convs=self.box_convs, cls_preds=self.cls_preds,
                     box_preds=self.box_preds)
        if self.obj_preds is not None:
            parts["obj_preds"] = self.obj_preds
        return parts

    @torch.no_grad()
    def _init_biases(self) -> None:
        prior_logit = -math.log((1 - self.prior_prob) / self.prior_prob)
        strides = getattr(self.prior_generator, "strides", [8 * 2**i for i in range(len(self.cls_preds))])
        for branch in self.branches:
            m = self._branch_modules(branch)
            for level, (cls_pred, box_pred) in enumerate(zip(m["cls_preds"], m["box_preds"])):
                box_bias = 1.0 if self.box_bias is None and self.bias_init == "yolov8" else self.box_bias
                if box_bias is not None:
                    _bias(box_pred).fill_(box_bias)
                if self.bias_init == "yolov8":
                    _bias(cls_pred).fill_(math.log(5 / self.num_classes / (self.bias_init_size / strides[level]) ** 2))
                else:
                    _bias(cls_pred).fill_(prior_logit)
            for obj_pred in m.get("obj_preds", []):
                _bias(obj_pred).fill_(prior_logit)

    def _branch_parts(self, m: dict[str, nn.ModuleList], level: int, x: Tensor) -> list[Tensor]:
        """One branch at one level: ``(B, c, H, W) ->`` its maps ``[box (B, R, H, W), obj (B, 1, H, W)?,
        cls (B, C, H, W)]``."""
        box_feat = m["box_convs"][level](x)
        parts = [m["box_preds"][level](box_feat)]
        if "obj_preds" in m:
            parts.append(m["obj_preds"][level](box_feat))
        parts.append(m["cls_preds"][level](m["cls_convs"][level](x)))
        return parts

    def _run_branch(self, m: dict[str, nn.ModuleList], level: int, x: Tensor) -> Tensor:
        """One branch at one level: ``(B, c, H, W) -> (B, K, H, W)`` = ``[box, obj?, cls]``."""
        return torch.cat(self._branch_parts(m, level, x), dim=1)

    def _drop_branches(self, kept: tuple[str, ...]) -> None:
        """The one-to-one branch set goes, or the one-to-many layers become empty lists (an inference
        copy of a one-to-one head: YOLOv10, YOLO26); ``branches``, ``out_channels`` follow."""
        self._check_bound()
        if "one2one" not in kept:
            self.one2one_branch = None
        if "one2many" not in kept:
            empty = [nn.ModuleList().train(self.training) for _ in range(5)]  # the head's mode kept
            self.cls_convs, self.box_convs, self.cls_preds, self.box_preds = empty[:4]
            self.obj_preds = empty[4] if self.objectness else None
        self.branches = kept
        self.out_channels = [self.level_channels * len(kept)] * len(self.stems)

    def _check_feats(self, feats: Sequence[Tensor]) -> None:
        """The layers exist and ``feats`` has one map per level they were built for."""
        self._check_bound()
        if len(feats) != len(self.stems):
            raise ValueError(f"DecoupledHead built for {len(self.stems)} levels, got {len(feats)}")

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        self._check_feats(feats)
        branches = [self._branch_modules(b) for b in self.branches]
        outs = []
        for i, x in enumerate(feats):
            x = self.stems[i](x)
            # YOLOv10: the one-to-one branches learn on detached features, so their loss does not
            # pull the shared backbone away from the one-to-many supervision.
            maps = [self._run_branch(m, i, x if k == 0 else x.detach()) for k, m in enumerate(branches)]
            outs.append(torch.cat(maps, dim=1))  # (B, K * branches, H, W)
        return outs

    def split_level(self, x: Tensor, branch: str = "one2many") -> tuple[Tensor, Tensor, Tensor | None]:
        """``(B, K * branches, H, W)`` -> ``box (B, H*W, R)``, ``cls (B, H*W, C)``, ``obj (B, H*W)``
        or None of ``branch``."""
        k = self.level_channels
        start = k * self.branches.index(branch)
        b, _, h, w = x.shape
        x = x[:, start:start + k].reshape(b, k, h * w).transpose(1, 2)  # (B, K, H, W) -> (B, H*W, K)
        r = self.num_box_params
        obj = x[..., r] if self.objectness else None
        return x[..., :r], x[..., r + int(self.objectness):], obj

    def forward_channels(self, feats: Sequence[Tensor], branch: str = "one2many") -> tuple[Tensor, Tensor,
                                                                                          Tensor | None]:
        """``branch``'s predictions from the neck's features, channel-first: ``box (B, R, N)``, ``cls (B, C, N)``,
        ``obj (B, N)`` or None. Each part's maps are flattened and concatenated over the levels on their own,
        never joined into the raw maps' ``[box, obj, cls]`` (an exported graph then has no copy to split)."""
        self._check_feats(feats)
        self._check_branch(branch)
        modules = self._branch_modules(branch)
        levels = [[p.flatten(2) for p in self._branch_parts(modules, i, self.stems[i](x))] for i, x in enumerate(feats)]
        parts = [torch.cat(maps, dim=2) for maps in zip(*levels)]  # [box (B, R, N), obj (B, 1, N)?, cls (B, C, N)]
        return parts[0], parts[-1], parts[1][:, 0] if self.objectness else None

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the trainer at each epoch start (0-based, of ``epochs``): the branch weights of the
        epoch, and the one-to-one pipeline told the epoch (the one-to-many one is told by the trainer)."""
        self.loss_weights_now = self.branch_weights(epoch, epochs)
        set_epoch = getattr(self.one2one_pipeline, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch, epochs)

    def loss(self, raw: Sequence[Tensor], batch: Any) -> dict[str, Tensor]:
        """The one-to-many losses (``loss_*``, ``stat_*``), plus with ``one2one_loss`` the
        one-to-one branches' as ``loss_o2o_*`` and a few ``stat_o2o_*`` (:data:`O2O_STATS`); each
        branch's ``loss_*`` times its weight (``branch_weights``: ``stat_w_o2m``, ``stat_w_o2o``), so
        their sum is ``w_o2m * L_o2m + w_o2o * L_o2o``."""
        out = super().loss(raw, batch)
        if self.one2one_pipeline is not None:
            o2o = self.one2one_pipeline(self.flatten(raw, "one2one"), batch)
            out.update({k.replace("_", "_o2o_", 1): v for k, v in o2o.items()
                        if k.startswith("loss_") or k in O2O_STATS})
            w_o2m, w_o2o = self.loss_weights_now
            for key, value in out.items():
                w = w_o2o if key.startswith("loss_o2o_") else w_o2m
                if key.startswith("loss_") and w != 1.0:  # 1 and 1 (YOLOv10): the losses as they are
                    out[key] = value * w
            out["stat_w_o2m"] = out["loss_cls"].new_tensor(w_o2m)
            out["stat_w_o2o"] = out["loss_cls"].new_tensor(w_o2o)
        return out
