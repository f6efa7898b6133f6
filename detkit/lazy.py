"""Naming a component: ``L(Class)(**kwargs)`` records a call without making it, and :func:`resolve_name`
finds a class by the name a command line gives.

    from detkit.lazy import L
    node = L(ATSSAssigner)(topk=9)      # ConfigDict({"_target_": ATSSAssigner, "topk": 9})

This is the one way a config names a component (model parts, assigners, transforms, the optimizer, the LR
schedule, trackers); :mod:`detkit.config` merges, overrides, checks and builds these nodes, and re-exports
everything here. It imports nothing of detkit but :mod:`detkit.errors`, so any module (the type checker of
:mod:`detkit.schema` included) can read lazy calls without importing the config machinery.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from detkit.errors import ConfigError

__all__ = ["SEARCH_MODULES", "TARGET_KEY", "ConfigDict", "L", "LazyCall", "MissingKeyError", "call_text", "is_lazy",
           "resolve_name", "target_name"]

TARGET_KEY = "_target_"

# Modules searched, in order, for a bare class name in an override such as
# ``model.head.loss.assigner=MaxIoUAssigner(...)``. Missing modules are skipped.
SEARCH_MODULES = (
    "detkit.assigners",
    "detkit.samplers",
    "detkit.coders",
    "detkit.losses",
    "detkit.anchors",
    "detkit.models",
    "detkit.models.backbones",
    "detkit.models.necks",
    "detkit.models.heads",
    "detkit.models.layers",
    "detkit.data",
    "detkit.data.transforms",
    "detkit.engine",
    "detkit.engine.trackers",
    "torch.optim",
    "torch.optim.lr_scheduler",
)


class MissingKeyError(ConfigError, AttributeError):
    """``cfg.name`` where the config has no key ``name`` (an ``AttributeError`` too, so ``getattr``
    with a default and ``hasattr`` work as usual)."""


class ConfigDict(dict):
    """A dict with attribute access. A lazy call is a ConfigDict holding ``_target_``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            where = self.__dict__.get("_filename")
            raise MissingKeyError(f"{where + ': ' if where else ''}config has no key {name!r}; "
                                  f"keys: {sorted(map(str, self))}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

    def __deepcopy__(self, memo: dict) -> ConfigDict:
        # Targets are classes/functions: share them, copy the rest.
        out = ConfigDict()
        memo[id(self)] = out
        for k, v in self.items():
            out[k] = v if k == TARGET_KEY else copy.deepcopy(v, memo)
        return out

    @property
    def target(self) -> Callable | None:
        return self.get(TARGET_KEY)


class LazyCall:
    """``L(Cls)(**kwargs)`` -> a ConfigDict describing the call ``Cls(**kwargs)``."""

    def __init__(self, target: Callable) -> None:
        if not callable(target):
            raise TypeError(f"LazyCall needs a class or function, got {target!r}")
        self._target = target

    def __call__(self, **kwargs: Any) -> ConfigDict:
        node = ConfigDict({TARGET_KEY: self._target})
        node.update({k: _to_config(v) for k, v in kwargs.items()})
        return node


L = LazyCall


def is_lazy(node: Any) -> bool:
    """True for a ConfigDict/dict that records a lazy call."""
    return isinstance(node, Mapping) and TARGET_KEY in node


def _to_config(value: Any) -> Any:
    """Turn nested plain dicts into ConfigDicts (lists are kept, their items converted)."""
    if isinstance(value, ConfigDict):
        return value
    if isinstance(value, Mapping):
        return ConfigDict({k: (v if k == TARGET_KEY else _to_config(v)) for k, v in value.items()})
    if isinstance(value, list):
        return [_to_config(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_config(v) for v in value)
    return value


def target_name(target: Callable) -> str:
    """``module.QualName`` of a class or function."""
    return f"{target.__module__}.{target.__qualname__}"



def resolve_name(name: str, namespace: Mapping[str, Any] | None = None) -> Callable:
    """Find a class/function by bare name (config imports, then detkit) or dotted path.

    Args:
        name: ``ATSSAssigner`` (looked up in ``namespace``, then detkit's public modules) or a dotted path
            (``mypkg.assign.MyAssigner``, imported).
        namespace: the config's own names.

    Returns:
        The class or function.

    Raises:
        ConfigError: the name is not found or its module does not import.
    """
    if namespace and name in namespace and callable(namespace[name]):
        return namespace[name]
    if "." in name:
        module_name, _, attr = name.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"cannot import {name!r}: {e}") from e
    for module_name in SEARCH_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise ConfigError(
        f"unknown name {name!r}: not imported by the config and not found in "
        f"{', '.join(SEARCH_MODULES)}; use a dotted path like 'package.module.{name}'"
    )


def call_text(node: Mapping[str, Any], lazy: bool = False, qualified: bool = False) -> str:
    """A lazy call written out as Python: ``ATSSAssigner(topk=9)``, with ``lazy`` as a config writes it
    (``L(ATSSAssigner)(topk=9)``), with ``qualified`` the class named by its module (``torch.optim.AdamW``:
    the shortest public module that exports it). Nested lazy calls are written the same way.

    Raises:
        ValueError: ``node`` is not a lazy call.
    """
    if TARGET_KEY not in node:
        raise ValueError(f"not a lazy call: {node!r}")

    def value(v: Any) -> str:
        if isinstance(v, Mapping) and TARGET_KEY in v:
            return call_text(v, lazy, qualified)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, tuple):
            return "(" + ", ".join(value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
        return repr(v)

    target = node[TARGET_KEY]
    name = _public_name(target) if qualified else target.__qualname__
    args = ", ".join(f"{k}={value(v)}" for k, v in node.items() if k != TARGET_KEY)
    return f"L({name})({args})" if lazy else f"{name}({args})"


def _public_name(target: Callable) -> str:
    """``torch.optim.AdamW`` for ``torch.optim.adamw.AdamW``: the shortest parent module exporting it."""
    parts = target.__module__.split(".")
    for i in range(1, len(parts) + 1):
        module = ".".join(parts[:i])
        try:
            if getattr(importlib.import_module(module), target.__qualname__, None) is target:
                return f"{module}.{target.__qualname__}"
        except ImportError:
            continue
    return f"{target.__module__}.{target.__qualname__}"
