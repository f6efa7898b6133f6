"""What a checkpoint says about itself: its config and its class names, so a tool can use it alone.

Every training checkpoint holds ``config`` (:func:`detkit.config.format_config` of the run's merged
config: Python source of imports and assignments) and, from this version, ``meta`` with
``class_names`` / ``num_classes`` / ``img_size`` (:func:`detkit.engine.run_checkpoints.run_meta`).

    model = load_checkpoint_model("work_dirs/run/best.pth")        # config taken from inside
    model = load_checkpoint_model("best.pth", "configs/x.py")      # the given config, as before
    model.detector, model.cfg, model.class_names

The stored config is read without running it: its text is parsed (:func:`config_from_dump`) and
only a dump's own forms are accepted (``from <module> import <name>`` of detkit / torch modules,
``name = <value>`` with literals, ``dict(...)``, ``L(Class)(...)`` and imported names), so a
checkpoint cannot run code when it is opened, as its pickle cannot (``weights_only=True``); the
model section may call only classes of detkit's model components and of ``torch.nn``.

Class names, in this order: the checkpoint's ``meta["class_names"]``, then the stored config's
``data.class_names``, then the given config's; names whose count is not the head's class count
(a config's inherited 80 COCO names on a 3-class head) are not used: labels are then numbers, with
a warning.
"""

from __future__ import annotations

import ast
import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from detkit.config import TARGET_KEY, ConfigDict, ConfigError, L, apply_overrides, check_signatures, instantiate
from detkit.engine.settings import upgrade_legacy_sections

__all__ = ["CheckpointModel", "checkpoint_class_names", "config_from_dump", "load_checkpoint_model", "stored_config"]

logger = logging.getLogger("detkit")

# Modules a stored config may import from (a dump names the module of every class it uses).
IMPORTABLE = ("detkit", "torch")
# Modules whose classes the model section may call when the config comes from a checkpoint.
MODEL_MODULES = ("detkit.models", "detkit.assigners", "detkit.anchors", "detkit.coders", "detkit.losses",
                 "detkit.samplers", "torch.nn")


def _in(module: str, packages: Sequence[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _value(node: ast.AST, names: Mapping[str, Any], source: str) -> Any:
    """A dump's value expression as config (no code runs: only the forms format_config writes)."""
    if isinstance(node, ast.Call):
        func = node.func
        is_dict = isinstance(func, ast.Name) and func.id == "dict"
        target = func.args[0] if isinstance(func, ast.Call) and len(func.args) == 1 else None
        is_lazy = (isinstance(func, ast.Call) and isinstance(func.func, ast.Name) and func.func.id == "L"
                   and not func.keywords and isinstance(target, ast.Name))
        if not (is_dict or is_lazy) or node.args or any(kw.arg is None for kw in node.keywords):
            raise ConfigError(f"{source}: {ast.unparse(node)[:80]!r} is not a lazy call L(Class)(...) or dict(...) "
                              "with keyword arguments")
        kwargs = {str(kw.arg): _value(kw.value, names, source) for kw in node.keywords}
        if is_dict or not isinstance(target, ast.Name):
            return ConfigDict(kwargs)
        return L(_name(target.id, names, source))(**kwargs)
    if isinstance(node, ast.Name):
        return _name(node.id, names, source)
    if isinstance(node, ast.List):
        return [_value(e, names, source) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_value(e, names, source) for e in node.elts)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ConfigError(f"{source}: ** in {ast.unparse(node)[:80]!r}")
        return ConfigDict({ast.literal_eval(k): _value(v, names, source)
                           for k, v in zip(node.keys, node.values) if k is not None})
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ConfigError(f"{source}: {ast.unparse(node)[:80]!r} is not a config value") from None


def _name(name: str, names: Mapping[str, Any], source: str) -> Any:
    if name not in names:
        raise ConfigError(f"{source}: name {name!r} is not imported in the stored config")
    return names[name]


def config_from_dump(text: str, source: str) -> ConfigDict:
    """The config a :func:`~detkit.config.format_config` dump describes, read without executing it.

    Args:
        text: the dump (Python source).
        source: where it comes from, for messages (``"best.pth (stored config)"``).

    Raises:
        ConfigError: anything but a dump's imports (of detkit / torch modules) and assignments, or
            a name it does not import.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise ConfigError(f"{source}: the stored config is not valid Python ({e.msg}, line {e.lineno})") from None
    names: dict[str, Any] = {}
    cfg = ConfigDict()
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module and not stmt.level and _in(stmt.module, IMPORTABLE):
            try:
                module = importlib.import_module(stmt.module)
                for alias in stmt.names:
                    names[alias.asname or alias.name] = getattr(module, alias.name)
            except (ImportError, AttributeError) as e:
                raise ConfigError(f"{source}: the stored config imports what this detkit lacks ({e}); "
                                  "pass the model's config file") from None
        elif (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
              and not stmt.targets[0].id.startswith("_")):
            cfg[stmt.targets[0].id] = _value(stmt.value, names, source)
        else:
            raise ConfigError(f"{source}: the stored config holds {ast.unparse(stmt)[:80]!r}, which a config dump "
                              "does not (only imports from detkit / torch and assignments are read)")
    return cfg


def _check_model_targets(node: Any, key: str, source: str) -> None:
    """Every call in the model section builds a class of detkit's model components or torch.nn."""
    if isinstance(node, Mapping):
        target = node.get(TARGET_KEY)
        if target is not None and not (isinstance(target, type) and _in(target.__module__, MODEL_MODULES)):
            where = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"
            raise ConfigError(f"{source}: {key} calls {where}, which a config read from a checkpoint may not "
                              f"(only classes of {', '.join(MODEL_MODULES)}); pass the model's config file")
        for k, v in node.items():
            if k != TARGET_KEY:
                _check_model_targets(v, f"{key}.{k}", source)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _check_model_targets(v, f"{key}.{i}", source)


def stored_config(ckpt: Mapping[str, Any], path: str | os.PathLike, overrides: Sequence[str] = ()) -> ConfigDict:
    """The config stored in a loaded checkpoint, with ``--cfg-options`` style overrides applied and
    checked as :func:`detkit.config.load_config` checks a file.

    Raises:
        ConfigError: the checkpoint holds no config (one line: give the config file), or the stored
            config is not a dump detkit can read.
    """
    path = os.fspath(path)
    text = ckpt.get("config") if isinstance(ckpt, Mapping) else None
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{path} has no config inside (not saved by detkit's trainer); give the model's config: "
                          "CONFIG CHECKPOINT")
    source = f"{path} (stored config)"
    cfg = config_from_dump(text, source)
    if not isinstance(cfg.get("model"), Mapping):
        raise ConfigError(f"{source}: no model section")
    try:  # a checkpoint from before the schedule section: its config converted (a config file is refused instead)
        upgrade_legacy_sections(cfg)
    except ValueError as e:
        raise ConfigError(f"{source}: train.optimizer: {e}") from None
    apply_overrides(cfg, list(overrides), source=source)
    _check_model_targets(cfg["model"], "model", source)
    check_signatures(cfg, source=source)
    from detkit.config_checks import check_call_arguments, check_typed_sections

    check_call_arguments(cfg, source=source, overrides=overrides)
    check_typed_sections(cfg, source=source, overrides=overrides)
    dict.__setattr__(cfg, "_filename", source)
    return cfg


def checkpoint_class_names(ckpt: Mapping[str, Any], path: str | os.PathLike = "<checkpoint>",
                           num_classes: int | None = None) -> list[str] | None:
    """The class names a loaded checkpoint was trained with: ``meta["class_names"]``, else its stored
    config's ``data.class_names``; None when it holds neither (or its config cannot be read), or
    when their count is not the head's (``num_classes`` when given, else the checkpoint's own:
    ``meta["num_classes"]`` or its config's ``model.head.num_classes``): a config's inherited names
    on a head of another class count never name its classes."""
    if not isinstance(ckpt, Mapping):
        return None
    meta = ckpt.get("meta") or {}
    names, count = meta.get("class_names"), meta.get("num_classes")
    if not names and isinstance(ckpt.get("config"), str):
        try:
            cfg = config_from_dump(ckpt["config"], os.fspath(path))
        except ConfigError:
            return None
        names = (cfg.get("data") or {}).get("class_names")
        count = ((cfg.get("model") or {}).get("head") or {}).get("num_classes")
    count = num_classes if num_classes is not None else count
    if not names or (isinstance(count, int) and len(names) != count):
        return None
    return [str(n) for n in names]


def _shown(names: Sequence[Any], first: int = 5) -> str:
    return ", ".join(map(str, names[:first])) + (", ..." if len(names) > first else "")


@dataclass
class CheckpointModel:
    """A checkpoint's detector with its weights (EMA when present), in eval mode.

    Attributes:
        detector: the built model.
        cfg: the config it was built from (the given file's, or the checkpoint's own).
        class_names: one name per class index (the checkpoint's, see the module docstring), or None.
        config_source: the config file, or ``"<checkpoint> (stored config)"``.
    """

    detector: nn.Module
    cfg: ConfigDict
    class_names: list[str] | None
    config_source: str


def load_checkpoint_model(checkpoint: str | os.PathLike, config: str | os.PathLike | None = None,
                          cfg_options: Sequence[str] = ()) -> CheckpointModel:
    """Build the model a checkpoint fills, from ``config`` or, without one, from the config inside it.

    Raises:
        CheckpointError: unreadable checkpoint, or weights that do not fill the model (one line).
        ConfigError: no config given and none inside; a bad override.
    """
    from detkit.config import load_config
    from detkit.engine.checkpoint import load_checkpoint
    from detkit.engine.weights import load_weights

    path = os.fspath(checkpoint)
    ckpt = load_checkpoint(path)
    cfg = load_config(config, list(cfg_options)) if config is not None else stored_config(ckpt, path, cfg_options)
    detector = instantiate(cfg.model, "model")
    load_weights(detector, path, strict=True)  # weights of another model (class count, width) are refused
    detector.eval()
    num_classes = getattr(getattr(detector, "head", None), "num_classes", None)
    names = checkpoint_class_names(ckpt, path, num_classes)
    config_names = (cfg.get("data") or {}).get("class_names")
    if names is None and config_names:
        names = [str(n) for n in config_names]
    elif names and config_names and [str(n) for n in config_names] != names:
        logger.warning(f"{path}: labelled with the checkpoint's class names ({_shown(names)}), "
                       f"not the config's ({_shown(config_names)})")
    if names and num_classes is not None and len(names) != int(num_classes):
        logger.warning(f"{path}: {len(names)} class names for a head with {num_classes} classes; "
                       "detections are labelled by class index")
        names = None
    return CheckpointModel(detector, cfg, names, getattr(cfg, "_filename", str(config)))
