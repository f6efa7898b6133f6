"""Python config files: real classes called lazily, inheritance by ``_base_``, overrides.

A config is a Python file. Components are written as lazy calls of the real classes, so grep
and go-to-definition lead from a config line to the code::

    from detkit.config import L
    from detkit.assigners import ATSSAssigner

    _base_ = ["common/models/yolov4.py"]          # paths relative to this file, merged in order
                                                  # ("detkit://yolov8n_tal.py": a config shipped with detkit)
    model = dict(head=dict(loss=dict(assigner=L(ATSSAssigner)(topk=9))))

``L(Cls)(**kwargs)`` records the call as a :class:`ConfigDict` with ``_target_ = Cls``; nothing
is built until :func:`instantiate`. Merging rules (child over base, override over config):

* plain dicts merge key by key, recursively;
* a lazy call merges into a base lazy call of the same class (change one argument);
* a lazy call of a *different* class replaces the base value whole (swap a component: the old
  component's arguments do not leak into the new one: ``optimizer=L(torch.optim.AdamW)(lr=1e-3)``
  over an SGD call keeps none of SGD's arguments);
* anything else replaces.

Command-line overrides (``--cfg-options a.b.c=VALUE``) take Python literals (``0.5``, ``[1, 2]``,
``'str'``, ``None``, ``dict(a=1)``) or a call that replaces a whole component::

    --cfg-options 'model.head.loss.assigner=MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)'

A bare class name is looked up among detkit's public components (and the config's own imports);
a dotted path (``mypkg.assign.MyAssigner(...)``) imports any class. Every lazy call's arguments
are checked against the constructor signature when the config loads, so a typo fails before
training starts with the config path, the key and the accepted arguments in the message; their
values are checked against the constructor's type annotations, and an assigner preset name
(``model.head.loss.assigner=atss``) is expanded to its lazy call (:mod:`detkit.config_checks`).
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from detkit.config_checks import check_call_arguments, check_typed_sections
from detkit.config_files import PACKAGE_SCHEME, find_config
from detkit.errors import Argument, ConfigError
from detkit.lazy import (
    SEARCH_MODULES,
    TARGET_KEY,
    ConfigDict,
    L,
    LazyCall,
    MissingKeyError,
    _accepted,
    _to_config,
    instantiate,
    is_lazy,
    parse_value,
    resolve_name,
    target_name,
)

__all__ = [  # the lazy-call names are detkit.lazy's, re-exported
    "SEARCH_MODULES",
    "TARGET_KEY",
    "ConfigDict",
    "ConfigError",
    "L",
    "MissingKeyError",
    "LazyCall",
    "is_lazy",
    "target_name",
    "apply_overrides",
    "format_config",
    "instantiate",
    "load_config",
    "parse_value",
    "resolve_name",
]

BASE_KEY = "_base_"


# ----------------------------------------------------------------------------------------------
# merging
# ----------------------------------------------------------------------------------------------


def merge(base: Any, child: Any) -> Any:
    """Merge ``child`` over ``base`` following the rules in the module docstring."""
    if isinstance(child, Mapping) and isinstance(base, Mapping):
        child_t, base_t = child.get(TARGET_KEY), base.get(TARGET_KEY)
        if child_t is not None and child_t is not base_t:
            return _to_config(child)  # a different component: replace whole
        out = ConfigDict(base)
        for k, v in child.items():
            out[k] = merge(base[k], v) if k in base and k != TARGET_KEY else _to_config(v)
        return out
    return _to_config(child)


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------


def _exec_file(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a config file; return (config values, the file's namespace)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    namespace: dict[str, Any] = {"__file__": path, "__name__": "detkit_config"}
    try:
        exec(compile(source, path, "exec"), namespace)
    except ConfigError:
        raise
    except Exception as e:  # a config that does not run is a config error, with its path
        raise ConfigError(f"{path}: failed to execute config: {type(e).__name__}: {e}") from e
    values = {
        k: v
        for k, v in namespace.items()
        if not k.startswith("__")
        and not isinstance(v, (types.ModuleType, types.FunctionType, type, LazyCall))
        and not (k.startswith("_") and k != BASE_KEY)
    }
    return values, namespace


def _base_path(path: str, base: str) -> str:
    """The file a ``_base_`` entry of the config ``path`` names: relative to ``path``'s folder, or a packaged
    config for ``detkit://NAME`` (so a user's config can inherit from one shipped with the package)."""
    if not str(base).startswith(PACKAGE_SCHEME):
        return os.path.join(os.path.dirname(path), base)
    try:
        return find_config(base)
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: _base_ {base}: {e}") from None


def _load_tree(path: str, stack: tuple[str, ...] = ()) -> tuple[ConfigDict, dict[str, Any]]:
    path = os.path.abspath(path)
    if path in stack:
        raise ConfigError(f"{path}: circular _base_ chain: {' -> '.join(stack + (path,))}")
    values, namespace = _exec_file(path)
    bases = values.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    merged = ConfigDict()
    names: dict[str, Any] = {}
    for base in bases:
        base_path = _base_path(path, base)
        base_cfg, base_ns = _load_tree(base_path, stack + (path,))
        merged = merge(merged, base_cfg)
        names.update(base_ns)
    merged = merge(merged, values)
    names.update(namespace)
    return merged, names


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ConfigDict:
    """Load a config file, its ``_base_`` chain and command-line style overrides.

    Args:
        path: the config file, or the name of a config shipped with detkit (``"yolov8n_tal.py"``,
            ``"detkit://yolov8n_tal.py"``: :func:`detkit.config_files.find_config`).
        overrides: ``"a.b.c=VALUE"`` strings (see the module docstring).

    Returns:
        The merged config. ``cfg._filename`` is the file it came from.

    Raises:
        ConfigError: unknown file, bad override, arguments a constructor does not accept, or a
            value of a typed section (:data:`detkit.config_checks.TYPED_SECTIONS`) of the wrong type or
            out of range.
    """
    try:
        path = find_config(path)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    if os.path.splitext(path)[1].lower() in (".yaml", ".yml", ".json"):  # a data.yaml / COCO json given as CONFIG
        raise ConfigError("{path}: not a config (configs are Python files); to train or evaluate on this dataset "
                          "give a config and {data}", values={"path": path, "data": Argument(
                              "data", python=f"adopt_dataset(cfg, {str(path)!r})", metavar=str(path))})
    cfg, namespace = _load_tree(path)
    apply_overrides(cfg, overrides, namespace=namespace, source=path)
    check_typed_sections(cfg, source=path, overrides=overrides)  # first: an old form is named as such
    check_signatures(cfg, source=path)
    check_call_arguments(cfg, source=path, overrides=overrides)
    dict.__setattr__(cfg, "_filename", path)  # not a key: kept out of dumps
    return cfg


# ----------------------------------------------------------------------------------------------
# overrides
# ----------------------------------------------------------------------------------------------


def apply_overrides(
    cfg: ConfigDict,
    overrides: Sequence[str],
    namespace: Mapping[str, Any] | None = None,
    source: str = "<overrides>",
) -> ConfigDict:
    """Apply ``a.b.c=VALUE`` overrides in place (merge rules as for ``_base_``).

    Args:
        cfg: the config to change.
        overrides: ``"key.path=VALUE"`` strings; VALUE is a Python literal or a call
            (``model.head.loss.assigner=ATSSAssigner(topk=9)``); list items by index (``pipeline.0.size=320``).
        namespace: names a call may use besides detkit's (the config file's imports).
        source: what error messages name (the config's path).

    Returns:
        ``cfg`` itself.

    Raises:
        ConfigError: an item without ``=``, an unparsable value, or a path through a missing key.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{source}: override {item!r} is not of the form key=value")
        try:
            value = parse_value(text, namespace)
        except ConfigError as e:
            raise ConfigError(f"{source}: override {key!r}: {e}") from e
        parts = key.strip().split(".")
        node: Any = cfg
        for depth, part in enumerate(parts[:-1]):
            node = _child(node, part, ".".join(parts[: depth + 1]), source)
        last = parts[-1]
        if isinstance(node, list):
            idx = _index(node, last, key, source)
            node[idx] = merge(node[idx], value)
        elif isinstance(node, MutableMapping):
            node[last] = merge(node[last], value) if last in node else _to_config(value)
        else:
            raise ConfigError(f"{source}: override {key!r}: {'.'.join(parts[:-1])} is not a dict")
    return cfg


def _index(node: list, part: str, key: str, source: str) -> int:
    try:
        idx = int(part)
        node[idx]
    except (ValueError, IndexError):
        raise ConfigError(f"{source}: override {key!r}: bad list index {part!r}") from None
    return idx


def _child(node: Any, part: str, key: str, source: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key, source)]
    if isinstance(node, Mapping):
        if part not in node:
            raise ConfigError(f"{source}: no key {key!r}; keys there: {sorted(map(str, node))}")
        return node[part]
    raise ConfigError(f"{source}: {key!r} is not a dict or list")


# ----------------------------------------------------------------------------------------------
# signature checks (building: detkit.lazy.instantiate)
# ----------------------------------------------------------------------------------------------


def _walk(node: Any, key: str = ""):
    """Yield (dotted key, node) for every dict/list node below ``node``."""
    if isinstance(node, Mapping):
        yield key, node
        for k, v in node.items():
            if k != TARGET_KEY:
                yield from _walk(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _walk(v, f"{key}.{i}")


def check_signatures(cfg: Mapping, source: str = "<config>") -> None:
    """Raise ConfigError for any lazy-call argument its target does not accept."""
    for key, node in _walk(cfg):
        target = node.get(TARGET_KEY) if isinstance(node, Mapping) else None
        if target is None:
            continue
        names, var_kw = _accepted(target)
        if var_kw:
            continue
        bad = [k for k in node if k != TARGET_KEY and k not in names]
        if bad:
            raise ConfigError(
                f"{source}: key {key or '<root>'!r}: {target.__qualname__} got unexpected "
                f"argument(s) {', '.join(map(repr, bad))}; accepted: {', '.join(names) or '(none)'}"
            )


# ----------------------------------------------------------------------------------------------
# printing
# ----------------------------------------------------------------------------------------------


def _format(value: Any, imports: set[tuple[str, str]], indent: int) -> str:
    pad, inner = " " * indent, " " * (indent + 4)
    if isinstance(value, Mapping):
        target = value.get(TARGET_KEY)
        items = [(k, v) for k, v in value.items() if k != TARGET_KEY]
        if target is not None:
            imports.add((target.__module__, target.__qualname__.split(".")[0]))
            head, close = f"L({target.__qualname__})(", ")"
        else:
            head, close = "dict(", ")"
        if all(isinstance(k, str) and k.isidentifier() for k, _ in items):
            body = [f"{inner}{k}={_format(v, imports, indent + 4)}," for k, v in items]
        else:
            head, close = ("{", "}") if target is None else (head, close)
            body = [f"{inner}{k!r}: {_format(v, imports, indent + 4)}," for k, v in items]
        if not body:
            return head + close
        return head + "\n" + "\n".join(body) + "\n" + pad + close
    if isinstance(value, (list, tuple)):
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        parts = [_format(v, imports, indent + 4) for v in value]
        if isinstance(value, tuple) and len(parts) == 1:
            parts[0] += ","
        flat = open_ + ", ".join(parts) + close
        if len(flat) <= 90 and "\n" not in flat:
            return flat
        return open_ + "\n" + "".join(f"{inner}{p},\n" for p in parts) + pad + close
    if callable(value):
        imports.add((value.__module__, value.__qualname__.split(".")[0]))
        return value.__qualname__
    return repr(value)


def format_config(cfg: Mapping) -> str:
    """Python source for a merged config; loading it gives the same config back."""
    imports: set[tuple[str, str]] = set()
    body = [f"{k} = {_format(v, imports, 0)}" for k, v in cfg.items()]
    lines = ["from detkit.config import L"]
    lines += [f"from {m} import {n}" for m, n in sorted(imports)]
    return "\n".join(lines) + "\n\n" + "\n".join(body) + "\n"
