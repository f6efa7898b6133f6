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

The same checker reads constructors' annotations (:func:`parameter_hints`; a nested lazy call is
checked by the class it builds, :func:`target_product`). This module knows no detkit class: which
classes check which sections of a config, and the lazy calls' arguments, when it loads is
:mod:`detkit.config_checks`'s (it imports the settings classes, which import this module).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, Union

from detkit.errors import ConfigError
from detkit.lazy import TARGET_KEY

__all__ = ["SettingError", "check_value", "default_of", "parameter_hints", "parse_section", "section_keys",
           "target_product"]

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
