"""virtio-blk over virtio-mmio, driven as a Linux driver would (Virtio 1.2 §5.2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pyvmm.devices.virtio import mmio as regs
from pyvmm.devices.virtio.blk import (
    S_IOERR,
    S_OK,
    S_UNSUPP,
    T_FLUSH,
    T_GET_ID,
    T_IN,
    T_OUT,
    T_WRITE_ZEROES,
    RawImage,
    VirtioBlock,
)
from pyvmm.devices.virtio.spec import (
    DEVICE_BLOCK,
    F_VERSION_1,
    STATUS_DEVICE_NEEDS_RESET,
    STATUS_FEATURES_OK,
)
from pyvmm.machine.interrupts import IrqLine
from tests.unit.devices.virtio.driver import Driver, Sink, make_memory

SECTORS = 64


def header(kind: int, sector: int = 0) -> bytes:
    return kind.to_bytes(4, "little") + bytes(4) + sector.to_bytes(8, "little")


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * (SECTORS * 2))
    return path


def setup(path, readonly=False):
    memory = make_memory()
    sink = Sink()
    device = VirtioBlock(memory, RawImage(path, readonly))
    transport = regs.VirtioMmio(device, IrqLine(sink, 5))
    driver = Driver(transport, memory)
    assert driver.init()
    return driver, device, sink, memory


def status_of(driver, memory) -> int:
    return memory.read_u8(driver.last_addresses[-1])


def test_identity_and_config(disk):
    driver, device, _, _ = setup(disk)
    assert driver.r(regs.DEVICE_ID) == DEVICE_BLOCK
    assert device.config_read(0, 8) == SECTORS  # capacity in 512-byte sectors
    assert device.config_read(20, 4) == 512  # blk_size


def test_read_write_flush_get_id(disk):
    driver, _, sink, memory = setup(disk)
    driver.submit(0, [(header(T_IN, 2), False), (1024, True), (1, True)])
    assert driver.used(0) == [(0, 1025)]
    assert status_of(driver, memory) == S_OK
    assert memory.read(driver.last_addresses[1], 1024) == disk.read_bytes()[1024:2048]
    assert sink.levels[5] and driver.r(regs.INTERRUPT_STATUS) == 1
    driver.w(regs.INTERRUPT_ACK, 1)
    assert not sink.levels[5]

    driver.submit(0, [(header(T_OUT, 1), False), (b"\xab" * 512, False), (1, True)])
    driver.submit(0, [(header(T_FLUSH), False), (1, True)])
    assert [length for _, length in driver.used(0)] == [1, 1]
    assert disk.read_bytes()[512:1024] == b"\xab" * 512

    driver.submit(0, [(header(T_GET_ID), False), (20, True), (1, True)])
    driver.used(0)
    assert memory.read(driver.last_addresses[1], 10) == b"pyvmm-disk"

    driver.submit(0, [(header(T_WRITE_ZEROES), False),
                      ((3).to_bytes(8, "little") + (2).to_bytes(4, "little") + bytes(4), False),
                      (1, True)])
    driver.used(0)
    assert status_of(driver, memory) == S_OK
    assert disk.read_bytes()[3 * 512:5 * 512] == bytes(1024)


def test_out_of_range_readonly_and_unknown(disk):
    driver, _, _, memory = setup(disk)
    driver.submit(0, [(header(T_IN, SECTORS), False), (512, True), (1, True)])
    driver.used(0)
    assert status_of(driver, memory) == S_IOERR  # beyond the end
    driver.submit(0, [(header(T_IN, SECTORS - 1), False), (1024, True), (1, True)])
    driver.used(0)
    assert status_of(driver, memory) == S_IOERR  # straddles the end
    driver.submit(0, [(header(99), False), (1, True)])
    driver.used(0)
    assert status_of(driver, memory) == S_UNSUPP
    before = disk.read_bytes()
    ro_driver, _, _, ro_memory = setup(disk, readonly=True)
    ro_driver.submit(0, [(header(T_OUT, 0), False), (b"x" * 512, False), (1, True)])
    ro_driver.used(0)
    assert status_of(ro_driver, ro_memory) == S_IOERR
    assert disk.read_bytes() == before


def test_features_not_offered_are_refused(disk):
    memory = make_memory()
    transport = regs.VirtioMmio(VirtioBlock(memory, RawImage(disk, False)), IrqLine(Sink(), 5))
    driver = Driver(transport, memory)
    assert not driver.init(features=F_VERSION_1 | (1 << 40))
    assert not driver.r(regs.STATUS) & STATUS_FEATURES_OK
    assert not Driver(transport, memory).init(features=0)  # no VERSION_1: legacy refused


def test_driver_errors_set_needs_reset(disk):
    driver, device, _, memory = setup(disk)
    q = driver.queues[0]
    # A descriptor chain that loops: 0 -> 1 -> 0.
    for slot, following in ((0, 1), (1, 0)):
        entry = q["desc"] + 16 * slot
        memory.write_u64(entry, 0x200000)
        memory.write_u32(entry + 8, 16)
        memory.write_u16(entry + 12, 1)
        memory.write_u16(entry + 14, following)
    memory.write_u16(q["avail"] + 4, 0)
    memory.write_u16(q["avail"] + 2, 1)
    driver.w(regs.QUEUE_NOTIFY, 0)
    assert driver.r(regs.STATUS) & STATUS_DEVICE_NEEDS_RESET
    assert driver.r(regs.INTERRUPT_STATUS) & 2  # configuration change
    assert "loops" in device.last_error
    # Reset brings it back.
    assert driver.init()
    driver.submit(0, [(header(T_IN, 0), False), (512, True), (1, True)])
    assert driver.used(0) == [(0, 513)]


def test_queue_size_must_be_a_power_of_two(disk):
    memory = make_memory()
    transport = regs.VirtioMmio(VirtioBlock(memory, RawImage(disk, False)), IrqLine(Sink(), 5))
    driver = Driver(transport, memory)
    assert driver.init(queues=0)
    driver.setup_queue(0, 12)
    assert driver.r(regs.STATUS) & STATUS_DEVICE_NEEDS_RESET
    assert not driver.r(regs.QUEUE_READY)


def test_acknowledged_write_survives_a_kill(tmp_path):
    """A write, a flush, then SIGKILL of the process: the data is on disk."""
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(SECTORS * 512))
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(os.getcwd())!r})
from pyvmm.devices.virtio import mmio as regs
from pyvmm.devices.virtio.blk import RawImage, VirtioBlock, T_OUT, T_FLUSH
from pyvmm.machine.interrupts import IrqLine
from tests.unit.devices.virtio.driver import Driver, Sink, make_memory
from tests.unit.devices.virtio.test_virtio_blk import header
memory = make_memory()
device = VirtioBlock(memory, RawImage({str(path)!r}, False))
driver = Driver(regs.VirtioMmio(device, IrqLine(Sink(), 5)), memory)
assert driver.init()
driver.submit(0, [(header(T_OUT, 7), False), (b"durable!" * 64, False), (1, True)])
driver.submit(0, [(header(T_FLUSH), False), (1, True)])
assert [memory.read_u8(a) for a in driver.last_addresses[-1:]] == [0]
print("flushed", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout == "flushed\n", done.stderr
    assert done.returncode == -9
    assert path.read_bytes()[7 * 512:8 * 512] == b"durable!" * 64
