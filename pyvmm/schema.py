"""Declared shapes of device state, checked when state crosses a trust boundary.

A snapshot file is user input: a device's `set_state` checks its argument
against the device's `STATE` schema (declared next to it, from the
hardware's register widths and ranges) before touching any register, and a
violation is one `StateError` naming the field, e.g. ``pic.master.imr: -1
is outside 0..255``.  Schemas are data: a device states its facts once, the
checker here is the only code that walks them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class StateError(ValueError):
    """A state dictionary that no real device could be in; str() names the field."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason

    def within(self, prefix: str) -> StateError:
        """The same error, its field path prefixed (``com1`` + ``divisor``)."""
        return StateError(f"{prefix}.{self.path}" if self.path else prefix, self.reason)


def _join(path: str, key: object) -> str:
    """`path.key`; a key from the file that is not short printable text is shown as its
    (shortened) repr, so a message naming it stays one readable line."""
    name = key if isinstance(key, str) and key.isprintable() and 0 < len(key) <= 40 \
        else _describe(key)
    return f"{path}.{name}" if path else name


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Spec:
    """One field's allowed values."""

    def check(self, value: Any, path: str = "") -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Int(Spec):
    """An integer (never a bool or a float) in lo..hi inclusive."""

    lo: int
    hi: int

    def check(self, value: Any, path: str = "") -> None:
        if type(value) is not int:
            raise StateError(path, f"{_describe(value)} is not an integer")
        if not self.lo <= value <= self.hi:
            raise StateError(path, f"{_describe(value)} is outside {self.lo}..{self.hi}")


def Bits(width: int) -> Int:  # noqa: N802 - reads as a type in schemas
    """An unsigned register `width` bits wide."""
    return Int(0, (1 << width) - 1)


U8 = Bits(8)
U16 = Bits(16)
U32 = Bits(32)
U64 = Bits(64)
NS = Int(0, (1 << 63) - 1)  # a guest time or deadline in nanoseconds


@dataclass(frozen=True)
class IntText(Spec):
    """A decimal integer written as a string (JSON object keys), in lo..hi."""

    lo: int
    hi: int

    def check(self, value: Any, path: str = "") -> None:
        if type(value) is not str or not value.isdecimal() or len(value) > 40:
            raise StateError(path, f"{_describe(value)} is not a decimal number")
        Int(self.lo, self.hi).check(int(value), path)


@dataclass(frozen=True)
class HexBytes(Spec):
    """Bytes written as hex digits, exactly `size` bytes long."""

    size: int

    def check(self, value: Any, path: str = "") -> None:
        if type(value) is not str or len(value) != 2 * self.size:
            raise StateError(path, f"not {self.size} bytes of hex")
        try:
            bytes.fromhex(value)
        except ValueError:
            raise StateError(path, "not hex digits") from None


@dataclass(frozen=True)
class Bool(Spec):
    def check(self, value: Any, path: str = "") -> None:
        if type(value) is not bool:
            raise StateError(path, f"{_describe(value)} is not true/false")


@dataclass(frozen=True)
class Number(Spec):
    """A finite int or float (not bool) in lo..hi."""

    lo: float
    hi: float

    def check(self, value: Any, path: str = "") -> None:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise StateError(path, f"{_describe(value)} is not a finite number")
        if not self.lo <= value <= self.hi:
            raise StateError(path, f"{_describe(value)} is outside {self.lo}..{self.hi}")


@dataclass(frozen=True)
class Str(Spec):
    max_len: int = 4096

    def check(self, value: Any, path: str = "") -> None:
        if type(value) is not str:
            raise StateError(path, f"{_describe(value)} is not a string")
        if len(value) > self.max_len:
            raise StateError(path, f"string of {len(value)} characters (at most {self.max_len})")


@dataclass(frozen=True)
class Choice(Spec):
    values: frozenset

    def check(self, value: Any, path: str = "") -> None:
        if type(value) not in (str, int) or value not in self.values:
            raise StateError(path, f"{_describe(value)} is not one of "
                                   f"{', '.join(sorted(map(str, self.values)))}")


@dataclass(frozen=True)
class Maybe(Spec):
    """None, or a value of `spec`."""

    spec: Spec

    def check(self, value: Any, path: str = "") -> None:
        if value is not None:
            self.spec.check(value, path)


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec
    min_len: int = 0
    max_len: int = 1 << 16

    def check(self, value: Any, path: str = "") -> None:
        if type(value) is not list:
            raise StateError(path, f"{_describe(value)} is not a list")
        if not self.min_len <= len(value) <= self.max_len:
            want = (str(self.min_len) if self.min_len == self.max_len
                    else f"{self.min_len}..{self.max_len}")
            raise StateError(path, f"{len(value)} entries, not {want}")
        for index, item in enumerate(value):
            self.item.check(item, _join(path, index))


@dataclass(frozen=True)
class MapOf(Spec):
    """A JSON object with keys of `key` and values of `value` (counters)."""

    key: Spec
    value: Spec
    max_len: int = 4096

    def check(self, value: Any, path: str = "") -> None:
        if type(value) is not dict:
            raise StateError(path, f"{_describe(value)} is not an object")
        if len(value) > self.max_len:
            raise StateError(path, f"{len(value)} entries (at most {self.max_len})")
        for key, item in value.items():
            self.key.check(key, _join(path, key))
            self.value.check(item, _join(path, key))


Rule = tuple[Callable[[dict], bool], str, str]  # (holds(state), field, reason when not)


@dataclass(frozen=True)
class Record(Spec):
    """A JSON object with exactly these fields (`optional` ones may be absent),
    plus cross-field `rules` checked once every field is well-formed."""

    fields: Mapping[str, Spec]
    optional: frozenset = field(default_factory=frozenset)
    rules: tuple[Rule, ...] = ()

    def check(self, value: Any, path: str = "") -> None:
        if type(value) is not dict:
            raise StateError(path, f"{_describe(value)} is not an object")
        unknown = sorted(map(str, set(value) - set(self.fields)))
        if unknown:
            raise StateError(_join(path, unknown[0]), "unknown field")
        for name, spec in self.fields.items():
            if name not in value:
                if name in self.optional:
                    continue
                raise StateError(_join(path, name), "missing")
            spec.check(value[name], _join(path, name))
        for holds, name, reason in self.rules:
            if not holds(value):
                raise StateError(_join(path, name), reason)


@dataclass(frozen=True)
class Object(Spec):
    """A JSON object whose fields another schema (its owner's) checks."""

    def check(self, value: Any, path: str = "") -> None:
        if type(value) is not dict:
            raise StateError(path, f"{_describe(value)} is not an object")


@dataclass(frozen=True)
class Pair(Spec):
    """A fixed-length list with one spec per position (e.g. [byte, from_aux])."""

    items: tuple[Spec, ...]

    def check(self, value: Any, path: str = "") -> None:
        if type(value) is not list or len(value) != len(self.items):
            raise StateError(path, f"{_describe(value)} is not a list of {len(self.items)}")
        for index, (item, spec) in enumerate(zip(value, self.items, strict=True)):
            spec.check(item, _join(path, index))


EMPTY = Record({})
