"""Short names for common assigner settings, as the comparison and ablation tools accept them.

Each preset is the text of a call, which ``detkit.config.parse_value`` turns into a lazy call and
``--cfg-options model.head.loss.assigner=...`` accepts as it is. The plain name is the paper's
rule; ``<rule>-<peer>`` is a peer's implementation of it, equal to the peer's own code on the same
inputs (``benchmarks/parity_assigners.py`` counts the disagreements; see README, Assigners).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ASSIGNER_PRESETS", "assigner_call", "build_preset"]

ASSIGNER_PRESETS: dict[str, str] = {
    "atss": "ATSSAssigner(topk=9)",
    "iou": "MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0, match_low_quality=True)",
    "grid": "GridAssigner(extra_match_thr=0.213, ignore_iou_thr=0.7)",
    "yolov5": "YOLOv5Assigner(anchor_t=4.0, offset=0.5)",
    "fcos": "FCOSAssigner(center_sampling_radius=1.5, scale_ranges=[(-1, 64), (64, 128), (128, 100000000.0)])",
    "simota": "SimOTAAssigner(center_radius=2.5, candidate_topk=10, iou_weight=3.0)",
    "simota-yolox": "SimOTAAssigner(center_radius=2.5, candidate_topk=10, iou_weight=3.0)",
    "tal": "TaskAlignedAssigner(topk=13, alpha=1.0, beta=6.0)",
    "tal-ultralytics": ("TaskAlignedAssigner(topk=10, alpha=0.5, beta=6.0, iou_mode='ciou', resolve='all_gts', "
                        "center_min_side=16.0, keep_zero_metric=True)"),
    "dsl": "DynamicSoftLabelAssigner(topk=13, iou_weight=3.0, soft_center_radius=3.0)",
    "dsl-mmyolo": ("DynamicSoftLabelAssigner(topk=13, iou_weight=3.0, soft_center_radius=3.0, cls_cost='gt_class', "
                   "candidates_only=False)"),
}


MIN_POS_SUFFIX = re.compile(r"^(?P<base>.+)\+minpos(?P<k>\d*)$")  # "<preset or call>+minpos[K]"


def assigner_call(name: str) -> str:
    """A preset's call text, or ``name`` itself (taken as a call such as ``"ATSSAssigner(topk=13)"``).

    A ``+minpos`` / ``+minposK`` suffix wraps the rule in ``MinPositives`` (every valid GT gets at
    least 1 / K positives, :mod:`detkit.assigners.min_pos`): ``"atss+minpos"`` ->
    ``"MinPositives(assigner=ATSSAssigner(topk=9), min_pos_per_gt=1)"``.
    """
    suffix = MIN_POS_SUFFIX.match(name.strip())
    if suffix:
        k = int(suffix["k"] or 1)
        return f"MinPositives(assigner={assigner_call(suffix['base'])}, min_pos_per_gt={k})"
    return ASSIGNER_PRESETS.get(name, name)


def build_preset(name: str) -> Any:
    """The assigner a preset name (or a call text) describes, built.

    Raises:
        ValueError: when ``name`` is neither a preset nor a call.
    """
    from detkit.config import instantiate, parse_value  # late: detkit.config imports the assigners

    node = parse_value(assigner_call(name))
    if not isinstance(node, dict):
        raise ValueError(f"{name!r} is neither an assigner preset ({', '.join(ASSIGNER_PRESETS)}) nor a call")
    return instantiate(node)
