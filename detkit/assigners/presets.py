"""Short names for common assigner settings, as the comparison and ablation tools accept them.

Each preset is the text of a call, which ``detkit.config.parse_value`` turns into a lazy call and
``--cfg-options model.head.assigner=...`` accepts as it is.
"""

from __future__ import annotations

__all__ = ["ASSIGNER_PRESETS", "assigner_call"]

ASSIGNER_PRESETS: dict[str, str] = {
    "atss": "ATSSAssigner(topk=9)",
    "iou": "MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0, match_low_quality=True)",
    "grid": "GridAssigner(extra_match_thr=0.213, ignore_iou_thr=0.7)",
    "simota": "SimOTAAssigner()",
    "tal": "TaskAlignedAssigner()",
}


def assigner_call(name: str) -> str:
    """A preset's call text, or ``name`` itself (taken as a call such as ``"ATSSAssigner(topk=13)"``)."""
    return ASSIGNER_PRESETS.get(name, name)
