"""Typed config sections: a dataclass per section, filled from a config dict with key and type checks.

    @dataclass
    class EMASettings:
        enabled: bool = True
        decay: float = 0.9999

    ema = parse_section(EMASettings, {"decay": 0.999}, key="train.ema")   # EMASettings(True, 0.999)
    parse_section(EMASettings, {"decay": "high"}, key="train.ema")
    # SettingError: train.ema.decay: expected float, got 'high' (str)

A field's type annotation is its schema: ``bool``, ``int``, ``float`` (an int is accepted and
converted), ``str``, ``None``, ``X | Y``, ``Literal[...]``, ``tuple[X, ...]`` / ``tuple[X, Y]``
and ``list[X]`` (a list or a tuple is accepted), ``dict``, ``Any``, and nested dataclasses (a
sub-section; ``Section | None`` too). A component chosen by the config is a lazy call of its class,
never a dict told apart by a ``type`` key. A dataclass field whose metadata has ``flat=True`` reads its
keys from the enclosing section itself, so a concern can have its own class while the config keeps its
keys side by side (``runtime.plot_interval``).

Value checks beyond types (``epochs >= 1``) belong in the dataclass's ``__post_init__`` and raise
:class:`SettingError` too.

The same checker reads constructors' annotations: :func:`check_call_arguments` checks every lazy
call's arguments when a config loads (a nested lazy call by the class it builds,
:func:`target_product`), and expands an assigner preset name where an assigner is expected.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, Literal, TypeVar, Union

from detkit.errors import ConfigError
from detkit.lazy import TARGET_KEY, resolve_name

__all__ = ["TYPED_SECTIONS", "SettingError", "check_typed_sections", "check_value", "default_of", "parameter_hints",
           "parse_section", "section_keys", "target_product"]

T = TypeVar("T")

FLAT = "flat"  # field metadata key: the sub-dataclass reads its keys from the enclosing section


class SettingError(ConfigError):
    """A config value of the wrong type or out of range; ``key`` is its dotted key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def default_of(component: Any, argument: str) -> Any:
    """The default of ``component``'s ``argument``, so a settings class states a default the
    component already has without writing it a second time: ``tau: float = default_of(ModelEMA, "tau")``."""
    default = inspect.signature(component).parameters[argument].default
    if default is inspect.Parameter.empty:
        raise TypeError(f"{getattr(component, '__qualname__', component)}({argument}) has no default")
    return default


def type_name(hint: Any) -> str:
    """A short readable name of a type annotation (``int``, ``float or None``, ``one of 'a', 'b'``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "any value"
    if hint is type(None):
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin in (tuple, list):
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"a list/tuple of {type_name(args[0])}"
        if origin is tuple and args:
            return f"a list/tuple of {len(args)} ({', '.join(type_name(a) for a in args)})"
        return f"a list of {type_name(args[0])}" if args else "a list"
    if _is_section(hint):
        return f"dict({', '.join(section_keys(hint))})"
    if origin is not None:
        return type_name(origin)
    return {dict: "a dict", Mapping: "a dict"}.get(hint, getattr(hint, "__name__", str(hint)))


def _wrong(key: str, value: Any, hint: Any) -> SettingError:
    if isinstance(value, Mapping) and TARGET_KEY in value:
        got = f"a lazy call of {getattr(value[TARGET_KEY], '__qualname__', value[TARGET_KEY])}"
    else:
        got = f"{value!r} ({type(value).__name__})"
    return SettingError(key, f"expected {type_name(hint)}, got {got}")


@functools.cache
def target_product(target: Callable) -> type | None:
    """The class of what calling ``target`` builds: ``target`` itself for a class, a function's
    return annotation when that is a class, else None (unknown)."""
    if isinstance(target, type):
        return target
    returned = parameter_hints(target).get("return")
    return returned if isinstance(returned, type) else None


@functools.cache
def parameter_hints(target: Callable) -> dict[str, Any]:
    """The type annotations of a class's constructor or a function's parameters (and ``return``),
    resolved; an annotation that cannot be resolved (a name imported only for type checkers) is left out."""
    fn = target.__init__ if isinstance(target, type) else target  # type: ignore[misc]
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - resolve the annotations one by one, skipping those that fail
        pass
    namespace = getattr(inspect.unwrap(fn), "__globals__", {})
    hints = {}
    for name, annotation in getattr(fn, "__annotations__", {}).items():
        try:
            hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation  # noqa: S307
        except Exception:  # noqa: BLE001 - an annotation this checker cannot read is not checked
            continue
    return hints


def _check_lazy(value: Mapping, hint: Any, key: str) -> Any:
    """A lazy call where ``hint`` is expected: accepted when the class it builds is (a subclass of)
    the annotated class, or when either cannot be told (a protocol, a function without a return
    annotation, a generic alias)."""
    if hint in (dict, Mapping) or typing.get_origin(hint) in (dict, Mapping):
        return value  # a section that takes dicts (runtime.loggers): the lazy call is one
    if typing.get_origin(hint) is Literal:
        raise _wrong(key, value, hint)
    product = target_product(value[TARGET_KEY])
    expected = typing.get_origin(hint) or hint
    if product is None or not isinstance(expected, type):
        return value
    try:
        fits = issubclass(product, expected)
    except TypeError:  # a protocol with data members, and the like: not checkable
        return value
    if not fits:
        raise _wrong(key, value, hint)
    return value


def check_value(value: Any, hint: Any, key: str, strict: bool = True) -> Any:
    """``value`` checked against the annotation ``hint`` (ints converted to float for ``float``,
    lists to tuples for ``tuple[...]``, dicts to dataclasses, ``strict`` as for
    :func:`parse_section`); a lazy call is checked by the class it builds (:func:`target_product`);
    raises :class:`SettingError`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if (isinstance(value, Mapping) and TARGET_KEY in value and origin not in (Union, types.UnionType)
            and not _is_section(hint)):
        return _check_lazy(value, hint, key)
    if hint is type(None):
        if value is None:
            return None
        raise _wrong(key, value, hint)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _wrong(key, value, hint)
    if origin in (Union, types.UnionType):
        return _check_union(value, args, hint, key, strict)
    if _is_section(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return parse_section(hint, value, key, strict)
        raise _wrong(key, value, hint)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _wrong(key, value, hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _wrong(key, value, hint)
            return tuple(check_value(v, a, f"{key}[{i}]", strict) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [check_value(v, item, f"{key}[{i}]", strict) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is Sequence and isinstance(value, (list, tuple)):  # constructors' `Sequence[int]`: items checked
        item = args[0] if args else Any
        for i, v in enumerate(value):
            check_value(v, item, f"{key}[{i}]", strict)
        return value
    if hint in (dict, Mapping) or origin in (dict, Mapping):
        if isinstance(value, Mapping):
            return value
        raise _wrong(key, value, hint)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _wrong(key, value, hint)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _wrong(key, value, hint)
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _wrong(key, value, hint)
    return value  # an annotation this checker does not know: taken as it is


def _check_union(value: Any, args: tuple[Any, ...], hint: Any, key: str, strict: bool) -> Any:
    classes = [a for a in args if _is_section(a)]
    if len(classes) > 1:  # a component told apart by a key is a lazy call of its class instead
        raise TypeError(f"{key}: a union of settings classes is not supported; annotate a lazy call instead")
    if classes and isinstance(value, Mapping):  # `Section | None`
        return parse_section(classes[0], value, key, strict)
    for arg in args:
        try:
            return check_value(value, arg, key, strict)
        except SettingError as e:
            if e.key != key:  # the value matched this member's shape; the error is inside it
                raise
    raise _wrong(key, value, hint)


def _is_section(hint: Any) -> typing.TypeGuard[type[Any]]:
    """A settings dataclass (a class, not an instance)."""
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def section_keys(cls: type) -> list[str]:
    """The config keys a settings dataclass reads (flat sub-dataclasses' keys included)."""
    keys: list[str] = []
    for f, hint in _fields(cls):
        keys += section_keys(hint) if f.metadata.get(FLAT) else [f.name]
    return keys


def parse_section(cls: type[T], section: Mapping[str, Any] | None, key: str, strict: bool = True) -> T:
    """Build the dataclass ``cls`` from the config dict ``section`` (found at dotted ``key``).

    Missing keys take the dataclass's defaults; every value is checked against its field's
    annotation (:func:`check_value`). ``strict`` makes keys the dataclass does not read errors
    naming the accepted ones; without it they are left alone (someone else's to check).

    Raises:
        SettingError: an unknown key (strict), a value of the wrong type, or a ``__post_init__`` check.
    """
    if isinstance(section, cls):
        return section
    if section is not None and (not isinstance(section, Mapping) or TARGET_KEY in section):  # a lazy call: no section
        raise _wrong(key, section, cls)
    section = dict(section or {})
    for moved, place in getattr(cls, "MOVED_KEYS", {}).items():  # refused even when not strict: said where it went
        if moved in section:
            raise SettingError(f"{key}.{moved}", f"this key moved to {place} (see docs/changelog.md)")
    accepted = section_keys(cls)
    unknown = sorted(str(k) for k in section if k not in accepted)
    if strict and unknown:
        raise SettingError(key, f"unknown key(s) {unknown}; accepted: {', '.join(accepted)}")
    kwargs: dict[str, Any] = {}
    for f, hint in _fields(cls):
        if f.metadata.get(FLAT):
            own = {k: section[k] for k in section_keys(hint) if k in section}
            kwargs[f.name] = parse_section(hint, own, key, strict)
        elif f.name in section:
            kwargs[f.name] = check_value(section[f.name], hint, f"{key}.{f.name}", strict)
    return cls(**kwargs)


# Top-level config sections read into typed settings; detkit.config.load_config checks their values
# against the field types when a config loads. Keys these classes do not know are left
# to the code that reads the section (the trainer refuses them), except in STRICT_SECTIONS.
TYPED_SECTIONS = {
    "train": "detkit.engine.settings.TrainSettings",
    "schedule": "detkit.engine.settings.ScheduleSettings",
    "runtime": "detkit.engine.settings.RuntimeSettings",
    "data": "detkit.data.settings.DataSettings",
}
# Sections whose unknown keys are refused when the config loads: no other code reads them whole
# (a typo such as ``data.train.batchsize`` would be ignored).
STRICT_SECTIONS = ("data",)


def check_typed_sections(cfg: Mapping, source: str = "<config>", overrides: Sequence[str] = ()) -> None:
    """Raise ConfigError when a value of a :data:`TYPED_SECTIONS` section has the wrong type or is
    out of range: one line with the file, the key, the value, the expected type and, for a value
    from the command line, the override that set it."""
    for name, class_path in TYPED_SECTIONS.items():
        try:
            if cfg.get(name) is None:
                continue
            if not isinstance(cfg[name], Mapping):  # e.g. --cfg-options data=mydata/data.yaml
                hint = "; train or evaluate on a dataset file with --data PATH" if name == "data" else ""
                raise SettingError(name, f"expected a section (a dict of settings), got {cfg[name]!r} "
                                         f"({type(cfg[name]).__name__}){hint}")
            section_class: Any = resolve_name(class_path)
            settings = parse_section(section_class, cfg[name], name, strict=name in STRICT_SECTIONS)
            if hasattr(settings, "check_with_config"):  # checks that need another section
                settings.check_with_config(cfg)
        except SettingError as e:
            given = _override_for(e.key, overrides)
            raise ConfigError(f"{source}: {e}" + (f" (from --cfg-options {given})" if given else "")) from None


def _override_for(key: str, overrides: Sequence[str]) -> str | None:
    """The last override that set ``key`` or a section holding it, as written."""
    for item in reversed(overrides):
        set_key = item.partition("=")[0].strip()
        if key == set_key or key.startswith((set_key + ".", set_key + "[")):
            return item.strip()
    return None


# Constructor arguments that take a component which a config may name by a string: the string is
# expanded by the function named here (``f(value, key) -> lazy call``) or refused by it; never passed on.
COMPONENT_ARGUMENTS = {
    "assigner": "detkit.assigners.presets.assigner_component",
}


def check_call_arguments(cfg: Mapping, source: str = "<config>", overrides: Sequence[str] = ()) -> None:
    """Check every lazy call's arguments against its constructor's type annotations (:func:`check_value`;
    unannotated arguments and annotations it does not know are skipped), expanding the strings of
    :data:`COMPONENT_ARGUMENTS` in place, then with the class's own ``check_config_arguments(arguments,
    key)`` when it has one (arguments that cannot go together, raising SettingError). Raises ConfigError
    in the one-line form of :func:`check_typed_sections`."""
    try:
        _check_calls(cfg, "")
    except SettingError as e:
        given = _override_for(e.key, overrides)
        raise ConfigError(f"{source}: {e}" + (f" (from --cfg-options {given})" if given else "")) from None


def _check_calls(node: Any, key: str) -> Any:
    """Check the lazy calls below ``node`` (at dotted ``key``); returns ``node`` (a new tuple where an
    item of a tuple was expanded)."""
    if isinstance(node, MutableMapping):
        target = node.get(TARGET_KEY)
        hints = parameter_hints(target) if callable(target) else {}
        for k in [k for k in node if k != TARGET_KEY]:
            sub = f"{key}.{k}" if key else str(k)
            if callable(target) and k in COMPONENT_ARGUMENTS:
                node[k] = resolve_name(COMPONENT_ARGUMENTS[k])(node[k], sub)
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
