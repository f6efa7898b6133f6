"""Short names for common assigner settings, as the comparison and ablation tools accept them.

Each preset is the text of a call, which ``detkit.config.parse_value`` turns into a lazy call and
``--cfg-options model.head.loss.assigner=...`` accepts as it is. The plain name is the paper's
rule; ``<rule>-<peer>`` is a peer's implementation of it, equal to the peer's own code on the same
inputs (``benchmarks/parity_assigners.py`` counts the disagreements; see README, Assigners).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from detkit.assigners.base import Assigner
from detkit.config import TARGET_KEY, ConfigError, instantiate, parse_value
from detkit.schema import SettingError, target_product

__all__ = ["ASSIGNER_PRESETS", "assigner_call", "assigner_component", "build_preset"]

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
        ValueError: (a :class:`~detkit.schema.SettingError`) when ``name`` is neither a preset nor
            a call of an assigner.
    """
    return instantiate(assigner_component(name, "assigner"))


def assigner_component(value: Any, key: str) -> Any:
    """``value`` as an assigner component of a config: a preset name (or call text) expanded to its
    lazy call; a lazy call of an assigner class or an assigner object kept as it is.

    Args:
        value: what the config holds where an assigner is expected (``key``, a dotted config key).

    Raises:
        SettingError: ``value`` is a string that is neither a preset nor a call of an assigner, a
            lazy call of a class without ``assign``, or anything else (``3``).
    """
    accepted = f"a lazy call of an assigner (L(ATSSAssigner)(...)) or a preset: {', '.join(ASSIGNER_PRESETS)}"
    if isinstance(value, str):
        try:
            node = parse_value(assigner_call(value))
        except ConfigError as e:  # a call of an unknown name
            raise SettingError(key, f"{value!r}: {e}") from None
        if not isinstance(node, Mapping) or TARGET_KEY not in node:
            raise SettingError(key, f"{value!r} is not an assigner preset; expected {accepted}")
        value = node
    if isinstance(value, Mapping) and TARGET_KEY in value:
        product = target_product(value[TARGET_KEY])
        if product is not None and not _is_assigner_class(product):
            raise SettingError(key, f"{product.__qualname__} is not an assigner (it has no assign method); "
                                    f"expected {accepted}")
        return value
    if isinstance(value, Assigner):
        return value
    raise SettingError(key, f"expected {accepted}, got {value!r} ({type(value).__name__})")


def _is_assigner_class(cls: type) -> bool:
    try:
        return issubclass(cls, Assigner)
    except TypeError:  # a class issubclass cannot test against the protocol: taken on trust
        return True
