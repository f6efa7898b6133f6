"""Short names for common assigner settings: command-line shorthands, each expanded to its lazy call here.

``--cfg-options model.head.loss.assigner=atss`` (or an entry of ``schedule.assigner_switches``, or the
comparison and ablation tools' ``--assigners``) is expanded to ``ASSIGNER_PRESETS["atss"]``, a lazy call
like any other in a config, when the config loads (:func:`assigner_component`, the one place that does
it). The plain name is the paper's rule; ``<rule>-<peer>`` is a peer's implementation of it, equal to the
peer's own code on the same inputs (``benchmarks/parity_assigners.py`` counts the disagreements; see
README, Assigners).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from detkit.assigners.atss import ATSSAssigner
from detkit.assigners.base import Assigner
from detkit.assigners.dynamic_soft_label import DynamicSoftLabelAssigner
from detkit.assigners.fcos import FCOSAssigner
from detkit.assigners.grid import GridAssigner
from detkit.assigners.max_iou import MaxIoUAssigner
from detkit.assigners.min_pos import MinPositives
from detkit.assigners.simota import SimOTAAssigner
from detkit.assigners.task_aligned import TaskAlignedAssigner
from detkit.assigners.yolov5 import YOLOv5Assigner
from detkit.errors import ConfigError
from detkit.lazy import TARGET_KEY, ConfigDict, L, call_text, instantiate, parse_value
from detkit.schema import SettingError, target_product

__all__ = ["ASSIGNER_PRESETS", "assigner_call", "assigner_component", "build_preset", "expand_preset"]

ASSIGNER_PRESETS: dict[str, ConfigDict] = {
    "atss": L(ATSSAssigner)(topk=9),
    "iou": L(MaxIoUAssigner)(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0, match_low_quality=True),
    "grid": L(GridAssigner)(extra_match_thr=0.213, ignore_iou_thr=0.7),
    "yolov5": L(YOLOv5Assigner)(anchor_t=4.0, offset=0.5),
    "fcos": L(FCOSAssigner)(center_sampling_radius=1.5, scale_ranges=[(-1, 64), (64, 128), (128, 100000000.0)]),
    "simota": L(SimOTAAssigner)(center_radius=2.5, candidate_topk=10, iou_weight=3.0),
    "simota-yolox": L(SimOTAAssigner)(center_radius=2.5, candidate_topk=10, iou_weight=3.0),
    "tal": L(TaskAlignedAssigner)(topk=13, alpha=1.0, beta=6.0),
    "tal-ultralytics": L(TaskAlignedAssigner)(topk=10, alpha=0.5, beta=6.0, iou_mode="ciou", resolve="all_gts",
                                              center_min_side=16.0, keep_zero_metric=True),
    # YOLO26's one-to-one branch (Ultralytics 8.4's E2ELoss): tal-ultralytics at top 7, then top 1 per GT
    "tal-e2e-ultralytics": L(TaskAlignedAssigner)(topk=7, alpha=0.5, beta=6.0, iou_mode="ciou", resolve="all_gts",
                                                  center_min_side=16.0, keep_zero_metric=True, topk2=1),
    "dsl": L(DynamicSoftLabelAssigner)(topk=13, iou_weight=3.0, soft_center_radius=3.0),
    "dsl-mmyolo": L(DynamicSoftLabelAssigner)(topk=13, iou_weight=3.0, soft_center_radius=3.0, cls_cost="gt_class",
                                              candidates_only=False),
}


MIN_POS_SUFFIX = re.compile(r"^(?P<base>.+)\+minpos(?P<k>\d*)$")  # "<preset or call>+minpos[K]"


def expand_preset(name: str) -> Any:
    """The lazy call a preset name stands for (a fresh copy), or ``name`` parsed as a call
    (``"ATSSAssigner(topk=13)"``: :func:`detkit.lazy.parse_value`).

    A ``+minpos`` / ``+minposK`` suffix wraps the rule in ``MinPositives`` (every valid GT gets at
    least 1 / K positives, :mod:`detkit.assigners.min_pos`): ``"atss+minpos"`` ->
    ``L(MinPositives)(assigner=L(ATSSAssigner)(topk=9), min_pos_per_gt=1)``.

    Raises:
        ConfigError: a call of a name that is not found.
    """
    name = name.strip()
    suffix = MIN_POS_SUFFIX.match(name)
    if suffix:
        return L(MinPositives)(assigner=expand_preset(suffix["base"]), min_pos_per_gt=int(suffix["k"] or 1))
    if name in ASSIGNER_PRESETS:
        return L(ASSIGNER_PRESETS[name][TARGET_KEY])(**{k: v for k, v in ASSIGNER_PRESETS[name].items()
                                                        if k != TARGET_KEY})
    return parse_value(name)


def assigner_call(name: str) -> str:
    """A preset's call as text (``"atss"`` -> ``"ATSSAssigner(topk=9)"``), for overrides and reports, or
    ``name`` itself when it is not a preset."""
    node = expand_preset(name)
    return call_text(node) if isinstance(node, Mapping) and TARGET_KEY in node else name


def build_preset(name: str) -> Any:
    """The assigner a preset name (or a call text) describes, built.

    Raises:
        ValueError: (a :class:`~detkit.schema.SettingError`) when ``name`` is neither a preset nor
            a call of an assigner.
    """
    return instantiate(assigner_component(name, "assigner"), "assigner")


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
            node = expand_preset(value)
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
