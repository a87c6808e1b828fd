"""How settings are checked: plain YAML values into the params dataclasses, keys and types
first (:func:`from_dict`), then each dataclass's ``__post_init__`` (obp style) with the small
value checks below.

Each check names the field by its dotted path: a dataclass's ``section`` (``fit.head``) and the
field (``batch_size``). The loader knows the real path of sections whose place varies
(``backbones.<name>``) and rewrites it with :meth:`SettingError.at`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from pipeline.errors import RmpipeError


class SettingError(RmpipeError):
    """One bad setting: ``section.field why``."""

    def __init__(self, section: str, field: str, why: str):
        self.section, self.field, self.why = section, field, why
        super().__init__(f"{section}.{field} {why}")

    def at(self, section: str) -> str:
        """The message with the section's real dotted path."""
        return f"{section}.{self.field} {self.why}" if section else f"{self.field} {self.why}"


def bad(obj, name: str, why: str):
    raise SettingError(type(obj).section, name, why)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(obj, name: str, low: int | None = 1, optional: bool = False) -> None:
    """An integer ``>= low`` (any integer where ``low`` is None; ``None`` too where ``optional``)."""
    value = getattr(obj, name)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        kind = {1: "a positive integer", 0: "a non-negative integer", None: "an integer"}.get(
            low, f"an integer >= {low}")
        bad(obj, name, f"must be {kind}{' or null' if optional else ''}, got {value!r}")


def within(obj, name: str, interval: str, optional: bool = False) -> None:
    """A finite number in ``interval``, written as in the message: ``"(0, 1]"``, ``"[0, inf)"``."""
    value = getattr(obj, name)
    if optional and value is None:
        return
    lo_s, hi_s = (s.strip() for s in interval[1:-1].split(","))
    lo, hi = float(lo_s), float(hi_s)
    ok = _number(value) and (lo < value if interval[0] == "(" else lo <= value) \
        and (value < hi if interval[-1] == ")" else value <= hi)
    if not ok:
        if hi == math.inf:
            rule = f"must be {'>' if interval[0] == '(' else '>='} {lo_s}"
        else:
            rule = f"must be in {interval}"
        bad(obj, name, f"{rule}{' or null' if optional else ''}, got {value!r}")


def one_of(obj, name: str, choices) -> None:
    value = getattr(obj, name)
    if value not in choices:
        bad(obj, name, f"must be one of {', '.join(choices)}, got {value!r}")


def each_one_of(obj, name: str, choices) -> None:
    """Every item of a tuple field is in ``choices`` (say which item is not)."""
    for i, value in enumerate(getattr(obj, name)):
        if value not in choices:
            raise SettingError(type(obj).section, f"{name}[{i}]",
                               f"must be one of {', '.join(choices)}, got {value!r}")


# --- keys and types ---------------------------------------------------------------------
def from_dict(cls, raw: Any, where: str, key: str = ""):
    """Build dataclass ``cls`` from plain YAML values, checking keys and types."""
    if not isinstance(raw, dict):
        raise RmpipeError(f"{where}: {key or 'top level'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise RmpipeError(f"{where}: unknown setting {_join(key, unknown[0])}")
    kwargs = {name: _coerce(hints[name], value, where, _join(key, name)) for name, value in raw.items()}
    try:
        return cls(**kwargs)
    except SettingError as exc:  # the dataclass's own check, named by its real path
        raise RmpipeError(f"{where}: {exc.at(key)}") from None
    except TypeError as exc:
        raise RmpipeError(f"{where}: {key or 'top level'}: {exc}") from None


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _coerce(tp, value, where: str, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where, key)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise RmpipeError(f"{where}: {key} must be a mapping")
        return {str(k): _coerce(args[1], v, where, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RmpipeError(f"{where}: {key} must be a list")
        item = args[0]
        return tuple(_coerce(item, v, where, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads 5e-4 as a string
        except ValueError:
            pass
    if tp in (int, str, bool) and type(value) is tp:
        return value
    if tp is Any:
        return value
    raise RmpipeError(f"{where}: {key} must be {tp.__name__}, got {value!r}")
