"""Sizes and durations as users write them, parsed in one place for the CLI and TOML."""

from __future__ import annotations

from pyvmm.machine.host_timer import MAX_RUN_SECONDS

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
_SUFFIXES = {"k": KIB, "m": MIB, "g": GIB}


def parse_size(text: str, bare_unit: int) -> int:
    """'64M', '1G', '512K', or a bare number of `bare_unit`s; ValueError if not a size.

    The CLI reads a bare `-m 128` as MiB (as QEMU does); TOML integers are bytes.
    """
    value = text.strip().lower()
    try:
        if value and value[-1] in _SUFFIXES:
            size = int(float(value[:-1]) * _SUFFIXES[value[-1]])
        else:
            size = int(value) * bare_unit
    except OverflowError:  # "infG"
        raise ValueError(text) from None
    if size < 0:
        raise ValueError(text)
    return size


def valid_seconds(value: float) -> bool:
    """A positive, finite duration that a host wait or deadline can be armed for."""
    return 0 < value <= MAX_RUN_SECONDS  # False for NaN as well
