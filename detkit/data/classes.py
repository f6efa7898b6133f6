"""Checking that a checkpoint's classes are the data's classes, label by label.

A detector's output channel ``k`` means the ``k``-th class it was trained on. Evaluating or
fine-tuning it on data whose label ``k`` is another class scores (or trains) every box under the
wrong name without any error: a COCO json whose category ids sort in another order, a
``names.txt`` written in another order, a data set with a class more or less. Checkpoints store
their ``class_names`` (in label order); :func:`check_class_names` compares them with the data's.

    check_class_names(meta.get("class_names"), dataset.class_names, f"{ckpt_path} on data.val")
"""

from __future__ import annotations

from collections.abc import Sequence

from detkit.config import ConfigError

__all__ = ["check_class_names", "class_name_mismatches"]

# How many differing labels the error message lists.
SHOWN = 3


def _clean(names: Sequence[object]) -> list[str]:
    return [str(n).strip() for n in names]


def class_name_mismatches(ckpt_names: Sequence[object], data_names: Sequence[object]) -> list[tuple[int, str, str]]:
    """``(label, checkpoint name, data name)`` of every label whose names differ (``"(none)"`` past
    the end of the shorter list); names are compared as stripped strings, case included."""
    a, b = _clean(ckpt_names), _clean(data_names)
    out = []
    for k in range(max(len(a), len(b))):
        x = a[k] if k < len(a) else "(none)"
        y = b[k] if k < len(b) else "(none)"
        if k >= len(a) or k >= len(b) or x != y:
            out.append((k, x, y))
    return out


def check_class_names(ckpt_names: Sequence[object] | None, data_names: Sequence[object] | None, source: str) -> None:
    """Refuse data whose class names differ from a checkpoint's, in label order.

    Args:
        ckpt_names: the checkpoint's ``class_names`` (its meta), in label order; ``None`` (a
            checkpoint saved before names were stored, or from elsewhere) skips the check.
        data_names: the dataset's ``class_names``, in label order (``dataset.class_names``;
            for a COCO json, the categories sorted by id); ``None`` skips the check.
        source: what is compared, for the message (e.g. ``"best.pth on data.val"``).

    Raises:
        ConfigError: one line naming ``source``, how many labels differ, the first ones
            (``label: 'checkpoint name' vs 'data name'``), and whether the names are the same in
            another order.
    """
    if ckpt_names is None or data_names is None:
        return
    diff = class_name_mismatches(ckpt_names, data_names)
    if not diff:
        return
    a, b = _clean(ckpt_names), _clean(data_names)
    shown = ", ".join(f"{k}: {x!r} vs {y!r}" for k, x, y in diff[:SHOWN])
    more = f" and {len(diff) - SHOWN} more" if len(diff) > SHOWN else ""
    if sorted(a) == sorted(b):
        kind = "the same names in another order (every box would carry another class's name)"
    elif len(a) != len(b):
        kind = f"{len(a)} classes in the checkpoint, {len(b)} in the data"
    else:
        kind = f"{len(diff)} of {len(a)} names differ"
    raise ConfigError(f"{source}: the checkpoint's classes are not the data's, label by label: {kind}; "
                      f"checkpoint vs data: {shown}{more}")
