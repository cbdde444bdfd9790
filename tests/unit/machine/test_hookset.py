"""HookSet (pyvmm/machine/hooks.py) and the buses' port/MMIO hooks."""

from __future__ import annotations

import pytest

from pyvmm.machine.bus import MmioBus, PortBus
from pyvmm.machine.hooks import HookKind, HookSet


class _Register:
    def __init__(self) -> None:
        self.value = 0x1234

    def io_read(self, offset: int, size: int) -> int:
        return self.value

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.value = value

    mmio_read = io_read
    mmio_write = io_write


def test_ranges_are_inclusive_and_accesses_overlapping_them_count() -> None:
    hooks = HookSet("vm")
    seen = []
    hooks.add(HookKind.MEM_READ, lambda *a: seen.append(a), 0x1000, 0x1FFF)
    hooks.mem_read(0xFFE, 4, 7)  # its last two bytes are in range
    hooks.mem_read(0x1FFF, 1, 8)
    hooks.mem_read(0x2000, 1, 9)
    hooks.mem_read(0xFFC, 4, 10)
    assert seen == [("vm", 0xFFE, 4, 7), ("vm", 0x1FFF, 1, 8)]


def test_any_callback_returning_false_vetoes_a_write() -> None:
    hooks = HookSet()
    hooks.add(HookKind.MEM_WRITE, lambda *a: None)
    assert hooks.mem_write(0, 1, 0)
    veto = hooks.add(HookKind.MEM_WRITE, lambda *a: False)
    assert not hooks.mem_write(0, 1, 0)
    hooks.remove(veto)
    assert hooks.mem_write(0, 1, 0)


def test_ports_become_one_hook_per_contiguous_run() -> None:
    hooks = HookSet()
    handles = hooks.add_ports(lambda *a: None, [0x60, 0x3F8, 0x64, 0x3F9, 0x3FA, 0x61])
    assert [(h.begin, h.end) for h in hooks.by_kind[HookKind.PORT]] == \
        [(0x60, 0x61), (0x64, 0x64), (0x3F8, 0x3FA)]
    assert len(handles) == 3
    with pytest.raises(ValueError):
        hooks.add_ports(lambda *a: None, [0x10000])


def test_bad_hooks_are_refused() -> None:
    hooks = HookSet()
    with pytest.raises(TypeError):
        hooks.add(HookKind.CODE, "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        hooks.add(HookKind.CODE, print, 10, 5)
    with pytest.raises(KeyError):
        hooks.remove(99)


def test_covers_page() -> None:
    hooks = HookSet()
    hooks.add(HookKind.CODE, print, 0x1FFF, 0x2000)
    assert hooks.covers_page((HookKind.CODE,), 1) and hooks.covers_page((HookKind.CODE,), 2)
    assert not hooks.covers_page((HookKind.CODE,), 3)
    assert not hooks.covers_page((HookKind.MEM_READ,), 1)


def test_listeners_hear_every_change() -> None:
    hooks = HookSet()
    changes = []
    hooks.listeners.append(lambda: changes.append(hooks.kinds()))
    handle = hooks.add(HookKind.BLOCK, print)
    hooks.remove(handle)
    assert changes == [{HookKind.BLOCK}, set()]


def test_port_bus_reports_reads_with_the_value_and_writes_before_the_device() -> None:
    bus = PortBus()
    device = _Register()
    bus.register(0x70, 2, device, "reg")
    hooks = HookSet("vm")
    log = []
    bus.attach_hooks(hooks)
    assert bus.hooks is None  # no port hook yet: the bus's fast path
    hooks.add_ports(lambda vm, port, size, value, w: log.append((port, size, value, w,
                                                                  device.value)),
                    range(0x70, 0x80))
    assert bus.hooks is hooks
    assert bus.read(0x71, 2) == 0x1234
    bus.write(0x70, 1, 0x1FF)  # masked to the access size
    bus.read(0x7F, 1)  # unclaimed: all ones, still reported
    assert log == [(0x71, 2, 0x1234, False, 0x1234), (0x70, 1, 0xFF, True, 0x1234),
                   (0x7F, 1, 0xFF, False, 0xFF)]


def test_mmio_bus_reports_accesses_in_range_only() -> None:
    bus = MmioBus()
    bus.register(0xFEC00000, 0x20, _Register(), "ioapic")
    hooks = HookSet()
    bus.attach_hooks(hooks)
    log = []
    hooks.add(HookKind.MMIO, lambda vm, a, s, v, w: log.append((a, v, w)),
              0xFEC00000, 0xFEC00003)
    bus.write(0xFEC00000, 4, 5)
    bus.read(0xFEC00010, 4)
    assert log == [(0xFEC00000, 5, True)]
