"""The checks a config gets when it loads: its typed sections and the arguments of its lazy calls.

:func:`detkit.config.load_config` (and the loaders of a checkpoint's stored config and of an adopted
dataset) run these on a merged config::

    check_typed_sections(cfg, source=path, overrides=overrides)   # train, schedule, runtime, data
    check_call_arguments(cfg, source=path, overrides=overrides)   # every L(Class)(...) against Class's annotations

Which class checks which section (:data:`TYPED_SECTIONS`) and which function expands a component a
config names by a string (:data:`COMPONENT_ARGUMENTS`) are tables of the classes and functions
themselves, imported here: the settings classes (:mod:`detkit.engine.settings`,
:mod:`detkit.data.settings`) and the assigner presets read lazy calls through :mod:`detkit.lazy` and
check values with :mod:`detkit.schema`, never through :mod:`detkit.config`, so this module sits between
them and the config loader with no import cycle and no class named by a string. The type checking
itself (annotations, sections, lazy calls by the class they build) is :mod:`detkit.schema`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

from detkit.assigners.presets import assigner_component
from detkit.data.settings import DataSettings
from detkit.engine.settings import RuntimeSettings, ScheduleSettings, TrainSettings
from detkit.errors import Argument, ConfigError
from detkit.lazy import TARGET_KEY
from detkit.schema import SettingError, check_value, parameter_hints, parse_section, target_product

__all__ = ["COMPONENT_ARGUMENTS", "DATA_ARGUMENT", "OVERRIDES_ARGUMENT", "STRICT_SECTIONS", "TYPED_SECTIONS",
           "check_call_arguments", "check_typed_sections"]

# The arguments a config error's remedy names (detkit.errors.ArgumentMessage): a dataset to train or
# evaluate on (adopted in Python, ``--data PATH`` for a tool), and the overrides of load_config (``--cfg-options``).
DATA_ARGUMENT = Argument("data", python="adopt_dataset(cfg, PATH)", metavar="PATH")
OVERRIDES_ARGUMENT = Argument("cfg_options", python="the override")

# Top-level config sections read into typed settings, checked against their field types when a config
# loads. Keys these classes do not know are left to the code that reads the section (the trainer refuses
# them), except in STRICT_SECTIONS.
TYPED_SECTIONS: dict[str, type] = {
    "train": TrainSettings,
    "schedule": ScheduleSettings,
    "runtime": RuntimeSettings,
    "data": DataSettings,
}
# Sections whose unknown keys are refused when the config loads: no other code reads them whole
# (a typo such as ``data.train.batchsize`` would be ignored).
STRICT_SECTIONS = ("data",)

# Constructor arguments that take a component which a config may name by a string: the string is
# expanded by the function here (``f(value, key) -> lazy call``) or refused by it; never passed on.
COMPONENT_ARGUMENTS: dict[str, Callable[[Any, str], Any]] = {
    "assigner": assigner_component,
}


def check_typed_sections(cfg: Mapping, source: str = "<config>", overrides: Sequence[str] = ()) -> None:
    """Raise ConfigError when a value of a :data:`TYPED_SECTIONS` section has the wrong type or is
    out of range: one line with the file, the key, the value, the expected type and, for a value
    from ``overrides``, the override that set it (a tool prints ``(from --cfg-options k=v)``)."""
    for name, section_class in TYPED_SECTIONS.items():
        try:
            if cfg.get(name) is None:
                continue
            if not isinstance(cfg[name], Mapping):  # e.g. an override data=mydata/data.yaml
                error = SettingError(name, f"expected a section (a dict of settings), got {cfg[name]!r} "
                                           f"({type(cfg[name]).__name__})")
                # a dataset file where a dataset belongs: the argument that takes one
                raise _config_error(source, error, overrides, "; train or evaluate on a dataset file with {data}"
                                    if name == "data" else "") from None
            settings: Any = parse_section(section_class, cfg[name], name, strict=name in STRICT_SECTIONS)
            if hasattr(settings, "check_with_config"):  # checks that need another section
                settings.check_with_config(cfg)
        except SettingError as e:
            raise _config_error(source, e, overrides) from None


def _config_error(source: str, error: SettingError, overrides: Sequence[str], remedy: str = "") -> ConfigError:
    """``<source>: <error><remedy>``, then the override that set the key if one did (``(from the override
    k=v)``; a tool prints ``(from --cfg-options k=v)``). ``remedy`` is a template naming ``{data}``."""
    given = _override_for(error.key, overrides)
    return ConfigError("{source}: {error}" + remedy + (" (from {overrides} {given})" if given else ""),
                       values={"source": source, "error": str(error), "given": given, "data": DATA_ARGUMENT,
                               "overrides": OVERRIDES_ARGUMENT})


def _override_for(key: str, overrides: Sequence[str]) -> str | None:
    """The last override that set ``key`` or a section holding it, as written."""
    for item in reversed(overrides):
        set_key = item.partition("=")[0].strip()
        if key == set_key or key.startswith((set_key + ".", set_key + "[")):
            return item.strip()
    return None


def check_call_arguments(cfg: Mapping, source: str = "<config>", overrides: Sequence[str] = ()) -> None:
    """Check every lazy call's arguments against its constructor's type annotations
    (:func:`~detkit.schema.check_value`; unannotated arguments and annotations it does not know are skipped),
    expanding the strings of :data:`COMPONENT_ARGUMENTS` in place, then with the class's own
    ``check_config_arguments(arguments, key)`` when it has one (arguments that cannot go together, raising
    SettingError). Raises ConfigError in the one-line form of :func:`check_typed_sections`."""
    try:
        _check_calls(cfg, "")
    except SettingError as e:
        raise _config_error(source, e, overrides) from None


def _check_calls(node: Any, key: str) -> Any:
    """Check the lazy calls below ``node`` (at dotted ``key``); returns ``node`` (a new tuple where an
    item of a tuple was expanded)."""
    if isinstance(node, MutableMapping):
        target = node.get(TARGET_KEY)
        hints = parameter_hints(target) if callable(target) else {}
        for k in [k for k in node if k != TARGET_KEY]:
            sub = f"{key}.{k}" if key else str(k)
            if callable(target) and k in COMPONENT_ARGUMENTS:
                node[k] = COMPONENT_ARGUMENTS[k](node[k], sub)
            node[k] = _check_calls(node[k], sub)
            if k in hints:
                check_value(node[k], hints[k], sub, strict=False)
        product = target_product(target) if callable(target) else None
        if product is not None and hasattr(product, "check_config_arguments"):  # the class's own cross-argument check
            product.check_config_arguments(node, key)
        return node
    if isinstance(node, list):
        node[:] = [_check_calls(v, f"{key}.{i}") for i, v in enumerate(node)]
        return node
    if isinstance(node, tuple):
        return tuple(_check_calls(v, f"{key}.{i}") for i, v in enumerate(node))
    return node
