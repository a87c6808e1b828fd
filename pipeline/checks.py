"""Small value checks for the params dataclasses' ``__post_init__`` (obp style).

Each check names the field by its dotted path: a dataclass's ``section`` (``fit.head``) and the
field (``batch_size``). The loader knows the real path of sections whose place varies
(``backbones.<name>``) and rewrites it with :meth:`SettingError.at`.
"""

from __future__ import annotations

import math

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
