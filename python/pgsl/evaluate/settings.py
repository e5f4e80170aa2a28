"""One style for every evaluation's settings: a dataclass whose fields are :func:`setting`\\ s
(a default, a check and what it expects), checked by :func:`check` and built by :func:`resolve`
from an instance, a dict of its fields, or None (the defaults). Inversion attacks, adversarial
attacks and the mu sweep all take their settings this way."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Mapping, Optional, Type, TypeVar

__all__ = ["check", "is_integer", "is_number", "one_of", "resolve", "setting", "INTEGER", "POSITIVE_INTEGER", "NON_NEGATIVE", "POSITIVE"]

T = TypeVar("T")


def is_integer(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


INTEGER = (lambda v: is_integer(v) and v >= 0, "an integer >= 0")
POSITIVE_INTEGER = (lambda v: is_integer(v) and v >= 1, "an integer >= 1")
NON_NEGATIVE = (lambda v: is_number(v) and v >= 0, "a finite number >= 0")
POSITIVE = (lambda v: is_number(v) and v > 0, "a finite number > 0")


def one_of(*choices) -> tuple:
    return (lambda v: v in choices, "one of " + ", ".join(map(str, choices)))


def setting(default, rule: Optional[tuple] = None, *, factory: Optional[Callable[[], Any]] = None):
    """A settings field: ``rule`` is ``(check(value) -> bool, what it expects)``."""
    meta = {"rule": rule}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check(settings, where: str = "") -> None:
    """Raise ValueError naming the first field of ``settings`` whose value breaks its rule
    (``where``: the argument it came from, for the message)."""
    for f in dataclasses.fields(settings):
        rule = f.metadata.get("rule")
        value = getattr(settings, f.name)
        if rule is not None and not rule[0](value):
            place = f" (in {where})" if where else ""
            raise ValueError(f"{type(settings).__name__}.{f.name}{place}: expected {rule[1]}, got {value!r}")
        if dataclasses.is_dataclass(value):
            check(value, f"{where}[{f.name!r}]" if where else "")


def resolve(cls: Type[T], given, where: str) -> T:
    """``given`` (None, a ``cls``, or a dict of its fields) as a checked ``cls``; ``where``
    names the argument in errors."""
    if given is None:
        value = cls()
    elif isinstance(given, cls):
        value = given
    elif isinstance(given, Mapping):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {unknown}; expected some of {sorted(fields)}")
        kwargs = {}
        for key, v in given.items():
            default = getattr(cls(), key)
            kwargs[key] = resolve(type(default), v, f"{where}[{key!r}]") if dataclasses.is_dataclass(default) else v
        value = cls(**kwargs)
    else:
        raise TypeError(f"{where}: expected a {cls.__name__} or a dict of its fields, got {type(given).__name__}")
    check(value, where)
    return value
