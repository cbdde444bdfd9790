"""The driver is not trusted: random descriptor tables, rings and register
traffic against every virtio device type.  Nothing may escape as an
exception, the image file never grows, and no other host file is touched."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvmm.devices.virtio import mmio as regs
from pyvmm.devices.virtio.blk import RawImage, VirtioBlock
from pyvmm.devices.virtio.console import VirtioConsole
from pyvmm.devices.virtio.net import VirtioNet
from pyvmm.devices.virtio.rng import VirtioRng
from pyvmm.machine.interrupts import IrqLine
from tests.unit.devices.virtio.driver import RAM, Driver, Sink, make_memory

REGISTERS = st.sampled_from([0x0, 0x4, 0x10, 0x14, 0x20, 0x24, 0x30, 0x34, 0x38, 0x44, 0x50,
                             0x60, 0x64, 0x70, 0x80, 0x84, 0x90, 0x94, 0xA0, 0xA4, 0xFC,
                             0x100, 0x108, 0x13C, 0x1FC, 0x2, 0x33])
VALUES = st.one_of(st.integers(0, 0xFFFFFFFF), st.sampled_from([0, 1, 2, 4, 8, 15, 16, 0x100000,
                                                                0x200000, 0xFFFFFFFF]))
OPERATIONS = st.lists(st.tuples(st.booleans(), REGISTERS, st.sampled_from([1, 2, 4, 8]),
                                VALUES), max_size=40)
RAM_POKES = st.lists(st.tuples(st.integers(0x100000, 0x100000 + 0x3000),
                               st.binary(min_size=1, max_size=64)), max_size=30)

def _devices(memory, tmp_path):
    image = tmp_path / "disk.img"
    if not image.exists():
        image.write_bytes(bytes(64 * 512))
    return [VirtioBlock(memory, RawImage(image, False)), VirtioRng(memory),
            VirtioConsole(memory, io.BytesIO()),
            VirtioNet(memory, bytes.fromhex("525400000001"))], image


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(OPERATIONS, RAM_POKES, st.integers(0, 3), st.booleans())
def test_random_registers_and_rings(tmp_path, operations, pokes, which, set_up_first):
    memory = make_memory()
    devices, image = _devices(memory, tmp_path)
    device = devices[which]
    transport = regs.VirtioMmio(device, IrqLine(Sink(), 5))
    if set_up_first:
        Driver(transport, memory).init(queues=len(device.queues), size=8)
    for address, data in pokes:  # scribble over rings, descriptors and buffers
        memory.write(address, data)
    for is_write, offset, size, value in operations:
        if is_write:
            transport.mmio_write(offset, size, value)
        else:
            transport.mmio_read(offset, size)
        for index in range(len(device.queues)):
            device.notify(index)
    # The state round-trips into a fresh device of the same type.
    state = transport.get_state()
    fresh_devices, _ = _devices(make_memory(), tmp_path)
    fresh = regs.VirtioMmio(fresh_devices[which], IrqLine(Sink(), 5))
    fresh.set_state(state)
    assert fresh.get_state() == state
    assert image.stat().st_size == 64 * 512
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.img"]
    assert memory.ram_size == RAM
