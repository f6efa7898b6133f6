"""Naming a component: ``L(Class)(**kwargs)`` records a call without making it, :func:`instantiate` makes
it, :func:`parse_value` reads one from text (``"ATSSAssigner(topk=13)"``) and :func:`resolve_name` finds a
class by the name a command line gives.

    from detkit.lazy import L, instantiate
    node = L(ATSSAssigner)(topk=9)      # ConfigDict({"_target_": ATSSAssigner, "topk": 9})
    assigner = instantiate(node, "model.head.loss.assigner")

This is the one way a config names a component (model parts, assigners, transforms, the optimizer, the LR
schedule, trackers); :mod:`detkit.config` loads, merges, overrides and checks config files of these nodes,
and re-exports everything here. It imports nothing of detkit but :mod:`detkit.errors`, so any module (the
type checker of :mod:`detkit.schema`, the settings classes and components that :mod:`detkit.config_checks`
checks a config with) can read and build lazy calls without importing the config machinery.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from detkit.errors import ConfigError, DetkitError

__all__ = ["SEARCH_MODULES", "TARGET_KEY", "ConfigDict", "L", "LazyCall", "MissingKeyError", "call_text", "instantiate",
           "is_lazy", "parse_value", "resolve_name", "target_name"]

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


# building lazy calls


def _accepted(target: Callable) -> tuple[list[str], bool]:
    """(parameter names, takes **kwargs) of a constructor/function."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return [], True
    names = [p.name for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return names, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _bind(target: Callable, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` checked against ``target``'s signature: a ConfigError for arguments it does not
    take or required ones missing. Only this check is a config error: an exception raised inside
    the constructor is the constructor's own and propagates as it is."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # no signature to check (some builtins): the call will tell
        return kwargs
    try:
        sig.bind(**kwargs)
    except TypeError as e:
        names, _ = _accepted(target)
        raise ConfigError(f"cannot build {target.__qualname__}({', '.join(kwargs)}): {e}; "
                          f"accepted: {', '.join(names) or '(none)'}") from None
    return kwargs


def instantiate(node: Any, where: str = "", /, **extra: Any) -> Any:
    """Build the object a config node describes (recursively); plain values pass through.

    ``extra`` keyword arguments are added to (and override) the top node's arguments, for values
    only known at run time (``instantiate(cfg.optimizer, params=model.parameters())``). Arguments
    are bound to the constructor's signature first: unknown or missing ones raise ConfigError.
    A ``ValueError`` raised by a constructor (its own argument checks: ``TaskAlignedAssigner(topk=0)``)
    becomes a ConfigError naming the config key and the call, the constructor's error chained as its
    cause; any other exception (a ``TypeError`` included: a value's type is checked against the
    annotations when the config loads, so one here is a bug) propagates unchanged.

    Args:
        node: a lazy call (``L(ATSSAssigner)(topk=9)``), or a list / dict / plain
            value holding them (``cfg.model``, ``cfg.data.train.dataset``).
        where: the dotted key of ``node`` in its config (``"model"``), for messages.
        **extra: keyword arguments added to the top node's call.

    Returns:
        The built object (a plain value as it is; containers with their lazy calls built).

    Raises:
        ConfigError: an unknown name, arguments the constructor's signature does not accept, or a
            value the constructor rejects.
    """
    if isinstance(node, Mapping):
        if TARGET_KEY not in node:
            out = {k: instantiate(v, _join(where, k)) for k, v in node.items()}
            out.update(extra)
            return ConfigDict(out)
        target = node[TARGET_KEY]
        kwargs = {k: instantiate(v, _join(where, k)) for k, v in node.items() if k != TARGET_KEY}
        kwargs.update(extra)
        kwargs = _bind(target, kwargs)
        try:
            return target(**kwargs)
        except ValueError as e:
            if isinstance(e, DetkitError):  # the user's data, checkpoint, ...: already says what is wrong
                raise
            name = getattr(target, "__qualname__", repr(target))
            given = ", ".join(f"{k}={v!r}" if isinstance(v, (int, float, str, bool, type(None))) else f"{k}=..."
                              for k, v in node.items() if k != TARGET_KEY)
            raise ConfigError(f"{where or '<config>'}: {name}({given}): {e}") from e
    if isinstance(node, list):
        return [instantiate(v, _join(where, i)) for i, v in enumerate(node)]
    if isinstance(node, tuple):
        return tuple(instantiate(v, _join(where, i)) for i, v in enumerate(node))
    return node


def _join(where: str, key: Any) -> str:
    """``where.key`` (``key`` alone at the top)."""
    return f"{where}.{key}" if where else str(key)


# reading a value or a call from text (overrides, presets)


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise ConfigError(f"expected a name, got {ast.unparse(node)!r}")


def _eval_value(node: ast.AST, namespace: Mapping[str, Any] | None) -> Any:
    """Evaluate a literal, or a call of a class with literal/call arguments, into config."""
    if isinstance(node, ast.Call):
        if node.args:
            raise ConfigError(f"use keyword arguments in {ast.unparse(node)!r}")
        kwargs = {kw.arg: _eval_value(kw.value, namespace) for kw in node.keywords if kw.arg}
        if isinstance(node.func, ast.Name) and node.func.id == "dict":  # a plain dict, as in config files
            return ConfigDict(kwargs)
        return L(resolve_name(_dotted(node.func), namespace))(**kwargs)
    if isinstance(node, ast.List):
        return [_eval_value(e, namespace) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_eval_value(e, namespace) for e in node.elts)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ConfigError(f"** in {ast.unparse(node)!r}: write the keys out")
        return ConfigDict(
            {ast.literal_eval(k): _eval_value(v, namespace) for k, v in zip(node.keys, node.values) if k is not None}
        )
    return ast.literal_eval(node)


def parse_value(text: str, namespace: Mapping[str, Any] | None = None) -> Any:
    """Parse the VALUE of ``key=VALUE``: a literal, a call, or else the raw string."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return text
    if isinstance(tree, ast.Name) and tree.id in ("true", "false", "none", "null"):
        return {"true": True, "false": False}.get(tree.id)
    try:
        return _eval_value(tree, namespace)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        return text  # not a literal: take the string as written (e.g. a path)
