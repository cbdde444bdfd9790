"""virtio-blk served on an I/O thread (pyvmm/devices/virtio/iothread.py): requests are
carried out off the notifying thread, the transport's interrupt state is set before
the lock is released, the line change is handed to the vCPU thread, and `quiesce`
leaves nothing in flight."""

from __future__ import annotations

import threading

import pytest

from pyvmm.devices.virtio import mmio as regs
from pyvmm.devices.virtio.blk import S_OK, T_FLUSH, T_IN, T_OUT, RawImage, VirtioBlock
from pyvmm.devices.virtio.iothread import IoThread
from pyvmm.machine.interrupts import IrqLine
from tests.unit.devices.virtio.driver import Driver, Sink, make_memory
from tests.unit.devices.virtio.test_virtio_blk import header, status_of

SECTORS = 16
WAIT = 120.0  # seconds: only a hang fails this, never a slow host


class RecordingImage(RawImage):
    """The image file, noting which thread each backend operation ran on."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.threads: list[tuple[str, int]] = []
        self.done = threading.Semaphore(0)

    def read(self, offset: int, length: int) -> bytes:
        self.threads.append(("read", threading.get_ident()))
        return super().read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self.threads.append(("write", threading.get_ident()))
        super().write(offset, data)

    def flush(self) -> None:
        self.threads.append(("flush", threading.get_ident()))
        super().flush()
        self.done.release()


@pytest.fixture
def rig(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * (SECTORS * 2))
    memory = make_memory()
    sink = Sink()
    image = RecordingImage(path, False)
    device = VirtioBlock(memory, image)
    transport = regs.VirtioMmio(device, IrqLine(sink, 5))
    posted: list = []
    transport.post_line = posted.append  # what the engine hands to the vCPU thread
    driver = Driver(transport, memory)
    assert driver.init()
    thread = IoThread(device, "test")
    yield driver, device, image, sink, posted, thread, path, memory
    thread.close()
    image.close()


def test_requests_are_served_on_the_io_thread_and_the_line_is_posted(rig):
    driver, device, image, sink, posted, thread, path, memory = rig
    driver.submit(0, [(header(T_OUT, 3), False), (b"\x5a" * 512, False), (1, True)])
    driver.submit(0, [(header(T_FLUSH), False), (1, True)])
    assert image.done.acquire(timeout=WAIT), "the I/O thread never flushed"
    with device.lock:  # the request, its used element and InterruptStatus are one step
        assert [length for _, length in driver.used(0)] == [1, 1]
        assert driver.t.interrupt_status == 1
    assert {kind for kind, _ in image.threads} == {"write", "flush"}
    assert all(ident != threading.get_ident() for _, ident in image.threads)
    assert path.read_bytes()[3 * 512:4 * 512] == b"\x5a" * 512
    assert 5 not in sink.levels or not sink.levels[5]  # the wire is the vCPU thread's
    assert posted, "no line change was handed over"
    for action in posted:
        action()
    assert sink.levels[5]
    driver.w(regs.INTERRUPT_ACK, 1)
    assert not sink.levels[5]


def test_quiesce_serves_what_is_pending_here_and_nothing_twice(rig):
    driver, device, image, _, _, thread, _, memory = rig
    with device.lock:  # the I/O thread cannot serve while this thread holds the lock
        driver.submit(0, [(header(T_IN, 2), False), (512, True), (1, True)])
        thread.quiesce()
        assert driver.used(0) == [(0, 513)]
        assert status_of(driver, memory) == S_OK
        assert image.threads == [("read", threading.get_ident())]
    driver.submit(0, [(header(T_FLUSH), False), (1, True)])
    assert image.done.acquire(timeout=WAIT)
    thread.quiesce()
    assert [kind for kind, _ in image.threads] == ["read", "flush"]
    assert [length for _, length in driver.used(0)] == [1]


def test_close_hands_notifications_back_to_the_notifying_thread(rig):
    driver, device, image, _, _, thread, _, _ = rig
    thread.close()
    assert device.notifier == device.notify
    driver.submit(0, [(header(T_IN, 1), False), (512, True), (1, True)])
    assert driver.used(0) == [(0, 513)]  # served inline, at once
    assert image.threads == [("read", threading.get_ident())]
