"""Snapshots: board/device state round trips, timers re-armed at the same guest
time, the file format and its one-line errors, and the engine state pieces a
migration needs (pending I/O completed, an acknowledged interrupt carried over)."""

from __future__ import annotations

import io
import json
import time
import zipfile

import pytest

from pyvmm import cli
from pyvmm.board.pc import PORT_DEBUG_EXIT, PcBoard
from pyvmm.cpu.state import FLAG_IF, CpuState, SegmentState
from pyvmm.machine.clock import ClockSource
from pyvmm.machine.stop import StopKind, StopReason
from pyvmm.snapshot import (
    FORMAT_VERSION,
    MANIFEST,
    Snapshot,
    SnapshotError,
    restore_snapshot,
    take_snapshot,
)
from pyvmm.vm import ImageSpec, VirtualMachine
from tests.conftest import requires_kvm

MS = 1_000_000

# Ports (PC/AT map, pyvmm/board/pc.py).
PIC_M, PIC_S, PIT_CH0, PIT_CW, CMOS_IDX, CMOS_DATA, COM1 = 0x20, 0xA0, 0x40, 0x43, 0x70, 0x71, 0x3F8


def manual_board() -> PcBoard:
    return PcBoard(ram_size=4 << 20, clock_source=ClockSource.MANUAL)


def init_pics(board: PcBoard) -> None:
    """ICW1-4 on both 8259s: vectors 0x20/0x28, cascade on IR2, 8086 mode."""
    for base, vector, icw3 in ((PIC_M, 0x20, 0x04), (PIC_S, 0x28, 0x02)):
        board.ports.write(base, 1, 0x11)
        board.ports.write(base + 1, 1, vector)
        board.ports.write(base + 1, 1, icw3)
        board.ports.write(base + 1, 1, 0x01)
    board.ports.write(PIC_M + 1, 1, 0xFA)  # unmask IRQ0 and the cascade
    board.ports.write(PIC_S + 1, 1, 0xFE)  # unmask IRQ8


def busy_board() -> PcBoard:
    """A board with every device away from its reset state and timers armed."""
    board = manual_board()
    init_pics(board)
    board.ports.write(PIT_CW, 1, 0x34)  # channel 0, LSB then MSB, mode 2
    board.ports.write(PIT_CH0, 1, 11932 & 0xFF)  # 100 Hz
    board.ports.write(PIT_CH0, 1, 11932 >> 8)
    board.ports.write(0x61, 1, 0x03)  # GATE2 + speaker
    board.ports.write(CMOS_IDX, 1, 0x0B)
    board.ports.write(CMOS_DATA, 1, 0x42)  # status B: PIE, 24 h
    board.ports.write(CMOS_IDX, 1, 0x3F)
    board.ports.write(CMOS_DATA, 1, 0x5A)  # a CMOS RAM byte
    board.ports.write(COM1 + 3, 1, 0x03)  # LCR 8N1
    board.ports.write(COM1 + 1, 1, 0x01)  # IER: received data
    board.ports.write(COM1 + 7, 1, 0xA5)  # scratch
    board.uart.enqueue_input(b"hi")
    board.ports.write(0x92, 1, 0x02)  # A20 on
    board.hypercall.start_timer(3 * MS, periodic=True)
    board.clock.advance(4 * MS + 123)
    board.clock.run_due()
    return board


def fresh_like(board: PcBoard, source: ClockSource = ClockSource.MANUAL) -> PcBoard:
    other = PcBoard(ram_size=board.ram_size, clock_source=source)
    other.set_state(board.get_state())
    return other


def pending_deadlines(board: PcBoard) -> list[int]:
    return sorted(t.deadline_ns for t in board.clock._timers if not t.cancelled)


# -- board and devices -----------------------------------------------------------

def test_board_state_round_trips_and_is_json():
    board = busy_board()
    state = board.get_state()
    assert json.loads(json.dumps(state)) == state
    restored = fresh_like(board)
    assert restored.get_state() == state
    assert restored.clock.now_ns() == board.clock.now_ns() == 4 * MS + 123


def test_every_device_is_in_the_board_state():
    board = busy_board()
    names = set(board.get_state()["devices"])
    assert names == {"pic", "pit", "port61", "cmos", "com1", "i8042", "port92",
                     "debug-exit", "debugcon", "hypercall", "pci-config", "i440fx", "piix3",
                     "elcr", "piix4-pm", "fw_cfg", "hpet", "ioapic", "reset-control"}
    assert [name for name, _ in board.snapshot_devices()][0] == "pic"


def test_timers_rearmed_at_same_guest_deadlines():
    board = busy_board()
    deadlines = pending_deadlines(board)
    assert len(deadlines) == 3  # PIT channel 0, RTC periodic, PV timer
    restored = fresh_like(board)
    assert pending_deadlines(restored) == deadlines


def test_timers_rearmed_on_a_host_clock_and_time_continues():
    board = busy_board()
    deadlines = pending_deadlines(board)
    started = time.monotonic_ns()
    restored = fresh_like(board, ClockSource.HOST)
    assert pending_deadlines(restored) == deadlines
    now = restored.clock.now_ns()
    elapsed = time.monotonic_ns() - started
    # Guest time goes on from the saved instant at host speed: never back, and never
    # further than the host time that passed since the restore began.
    saved = board.clock.now_ns()
    assert saved <= now <= saved + elapsed


def test_restored_devices_behave_the_same():
    board = busy_board()
    restored = fresh_like(board)
    for b in (board, restored):
        b.clock.advance(50 * MS)
        b.clock.run_due()
    # Same PIT count, same RTC status, same IRQ pending and acknowledged vector.
    for b in (board, restored):
        b.ports.write(PIT_CW, 1, 0x00)  # latch channel 0
    counts = [(b.ports.read(PIT_CH0, 1), b.ports.read(PIT_CH0, 1)) for b in (board, restored)]
    assert counts[0] == counts[1]
    assert board.pit.irq_pulses == restored.pit.irq_pulses > 0
    assert board.pic.interrupt_pending() and restored.pic.interrupt_pending()
    assert board.pic.acknowledge() == restored.pic.acknowledge() == 0x20
    # UART: the queued input survives; scratch and LCR too.
    assert [restored.ports.read(COM1, 1) for _ in range(2)] == list(b"hi")
    assert restored.ports.read(COM1 + 7, 1) == 0xA5
    assert restored.ports.read(COM1 + 3, 1) == 0x03
    restored.ports.write(CMOS_IDX, 1, 0x3F)
    assert restored.ports.read(CMOS_DATA, 1) == 0x5A
    restored.ports.write(CMOS_IDX, 1, 0x0C)
    assert restored.ports.read(CMOS_DATA, 1) & 0xC0 == 0xC0  # PF + IRQF set by the RTC
    assert restored.ports.read(0x92, 1) == 0x02
    assert restored.ports.read(0x61, 1) & 0x03 == 0x03


def test_pending_stop_request_round_trips():
    board = manual_board()
    board.ports.write(PORT_DEBUG_EXIT, 1, 0x10)
    restored = fresh_like(board)
    assert restored.stop_request == StopReason(StopKind.DEBUG_EXIT, "", 33)


# -- whole VM, file format ---------------------------------------------------------

@pytest.fixture
def paused_vm():
    """The hello boot sector under interp, paused after 120 instructions."""
    out = io.BytesIO()
    vm = VirtualMachine(engine="interp", ram_size=4 << 20, serial_output=out)
    vm.load(ImageSpec.bundled("hello"))
    vm.engine.max_instructions = 120
    reason = vm.run(30)
    assert reason.kind is StopKind.PAUSED
    yield vm, out
    vm.close()


def test_snapshot_file_round_trip(paused_vm, tmp_path):
    vm, out = paused_vm
    vm.board.memory.write(0x300000, b"pyvmm snapshot marker")
    snapshot = take_snapshot(vm)
    path = tmp_path / "vm.pvs"
    snapshot.save(path)
    loaded = Snapshot.load(path)
    assert loaded.cpu == vm.engine.get_state()
    assert loaded.board == vm.board.get_state() | {"clock": loaded.board["clock"]}
    assert loaded.instructions == 120
    assert loaded.image["label"] == "hello"
    restored = restore_snapshot(loaded, "interp", serial_output=out)
    try:
        assert restored.board.memory.read(0x300000, 21) == b"pyvmm snapshot marker"
        assert restored.board.memory.read(0x7C00, 512) == vm.board.memory.read(0x7C00, 512)
        assert restored.engine.get_state() == loaded.cpu
        assert restored.board.clock.now_ns() == snapshot.guest_ns
        reason = restored.run(30)
        assert reason.exit_code == 33
        assert out.getvalue() == b"Hello from a pyvmm boot sector!\r\n"
        assert restored.stats.instructions > 120  # counting continues
    finally:
        restored.close()


def _rewrite(path, manifest_change=None, drop=None, corrupt=None):
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    if manifest_change:
        manifest = json.loads(members[MANIFEST])
        manifest_change(manifest)
        members[MANIFEST] = json.dumps(manifest).encode()
    if drop:
        del members[drop]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    if corrupt:
        raw = bytearray(path.read_bytes())
        offset = raw.index(corrupt) + len(corrupt) + 40
        raw[offset] ^= 0xFF
        path.write_bytes(bytes(raw))


def _set(key, value):
    return lambda manifest: manifest.__setitem__(key, value)


BAD_FILES = {
    "not a zip": lambda p: p.write_bytes(b"hello, not a snapshot\n" * 10),
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "wrong version": lambda p: _rewrite(p, _set("version", FORMAT_VERSION + 1)),
    "wrong format": lambda p: _rewrite(p, _set("format", "qemu-savevm")),
    "ram size": lambda p: _rewrite(p, _set("ram_size", "lots")),
    "cpu missing": lambda p: _rewrite(p, lambda m: m.pop("cpu")),
    "cpu garbage": lambda p: _rewrite(p, _set("cpu", {"rip": 1, "bogus": 2})),
    "cpu register text": lambda p: _rewrite(p, lambda m: m["cpu"].__setitem__("rip", "0x7c00")),
    "cpu few registers": lambda p: _rewrite(p, lambda m: m["cpu"].__setitem__("gprs", [0] * 3)),
    "device garbage": lambda p: _rewrite(
        p, lambda m: m["board"]["devices"].__setitem__("pit", {"channels": [{"x": 1}]})),
    "memory missing": lambda p: _rewrite(p, drop="memory/ram-high.bin"),
    "memory resized": lambda p: _rewrite(
        p, lambda m: m["memory"][0].__setitem__("size", 4096)),
    "manifest not json": lambda p: _rewrite(p, drop=MANIFEST) or _add_member(
        p, MANIFEST, b"{not json"),
    "no manifest": lambda p: _rewrite(p, drop=MANIFEST),
}


def _add_member(path, name, data):
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(name, data)


@pytest.mark.parametrize("damage", sorted(BAD_FILES))
def test_bad_snapshot_files_give_one_line_errors(paused_vm, tmp_path, capfd, damage):
    vm, _ = paused_vm
    path = tmp_path / "vm.pvs"
    take_snapshot(vm).save(path)
    BAD_FILES[damage](path)
    status = cli.main(["run", "--restore", str(path), "--engine", "interp", "--serial", "none"])
    err = capfd.readouterr().err
    assert status == cli.EXIT_USAGE, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyvmm: error: "), err
    assert "Traceback" not in err


def test_corrupt_memory_is_detected(paused_vm, tmp_path):
    vm, _ = paused_vm
    path = tmp_path / "vm.pvs"
    take_snapshot(vm).save(path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("memory/ram-low.bin")
    raw = bytearray(path.read_bytes())
    # Local header: 30 bytes + name + extra field, then the deflate data.
    name_len, extra_len = (int.from_bytes(raw[info.header_offset + i:info.header_offset + i + 2],
                                          "little") for i in (26, 28))
    data_start = info.header_offset + 30 + name_len + extra_len
    raw[data_start + 16] ^= 0x55
    path.write_bytes(bytes(raw))
    with pytest.raises(SnapshotError) as info:
        Snapshot.load(path)
    assert "\n" not in str(info.value)


def test_wrong_version_message_names_versions(paused_vm, tmp_path):
    vm, _ = paused_vm
    path = tmp_path / "vm.pvs"
    take_snapshot(vm).save(path)
    _rewrite(path, _set("version", 99))
    with pytest.raises(SnapshotError, match="version 99 is not supported"):
        Snapshot.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(SnapshotError, match="no such file"):
        Snapshot.load(tmp_path / "nope.pvs")


@pytest.mark.parametrize("argv, message", [
    (["--snapshot-to", "x.pvs", "hello"], "needs exactly one of"),
    (["--snapshot-at", "1", "hello"], "needs --snapshot-to"),
    (["--switch-to", "interp", "hello"], "needs exactly one of"),
    (["--engine", "kvm", "--snapshot-to", "x.pvs", "--snapshot-after-instructions", "5",
      "hello"], "does not count guest instructions"),
    (["--restore", "x.pvs", "hello"], "give no GUEST"),
    (["--snapshot-to", "x.pvs", "--snapshot-at", "1", "--switch-to", "interp",
      "--switch-after", "1", "hello"], "not both"),
])
def test_snapshot_option_errors(argv, message, capfd):
    from tests.conftest import kvm_skip_reason

    if "kvm" in argv and kvm_skip_reason() is not None:
        pytest.skip(str(kvm_skip_reason()))
    status = cli.main(["run", *argv])
    err = capfd.readouterr().err
    assert status == cli.EXIT_USAGE and message in err, err


# -- engine state pieces a migration needs --------------------------------------------

def _real_mode_vm(engine: str) -> VirtualMachine:
    """Real mode: IVT[0x20] -> 0000:0600 (exit 0x10); main code at 0x7C00 exits 0x11."""
    vm = VirtualMachine(engine=engine, ram_size=4 << 20)
    memory = vm.board.memory
    memory.write(0x20 * 4, (0x0600).to_bytes(2, "little") + (0).to_bytes(2, "little"))
    memory.write(0x600, bytes([0xB0, 0x10, 0xE6, 0xF4, 0xF4]))  # mov al,0x10; out 0xF4,al; hlt
    memory.write(0x7C00, bytes([0xB0, 0x11, 0xE6, 0xF4, 0xF4]))  # mov al,0x11; out 0xF4,al; hlt
    state = CpuState()
    for name in ("es", "ss", "ds", "fs", "gs"):
        state.segments[name] = SegmentState.real_mode(0)
    state.segments["cs"] = SegmentState.real_mode(0, code=True)
    state.rip = 0x7C00
    state.gprs[4] = 0x7000  # sp
    state.rflags |= FLAG_IF
    state.pending_interrupt = 0x20
    vm.engine.set_state(state)
    return vm


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_emulators_deliver_a_carried_over_interrupt_first(engine):
    vm = _real_mode_vm(engine)
    try:
        assert vm.engine.get_state().pending_interrupt == 0x20
        assert vm.run(10).exit_code == 33  # the handler ran before 0x7C00's code
        assert vm.engine.get_state().pending_interrupt is None
    finally:
        vm.close()


@requires_kvm
def test_kvm_carries_a_pending_interrupt_through_its_state():
    vm = _real_mode_vm("kvm")
    try:
        assert vm.engine.get_state().pending_interrupt == 0x20  # queued in KVM's events
        assert vm.run(10).exit_code == 33
        assert vm.engine.get_state().pending_interrupt is None
    finally:
        vm.close()


class _StopOnRead:
    """A port that answers 0x5A and asks the VM to stop (so run() returns right
    after the IN's exit, before KVM has written AL)."""

    def __init__(self, board: PcBoard) -> None:
        self.board = board

    def io_read(self, offset: int, size: int) -> int:
        self.board.request_stop(StopReason(StopKind.PAUSED, "port read"))
        return 0x5A

    def io_write(self, offset: int, size: int, value: int) -> None:
        pass


@requires_kvm
def test_kvm_completes_pending_io_before_run_returns():
    vm = VirtualMachine(engine="kvm", ram_size=4 << 20)
    try:
        vm.board.ports.register(0x530, 1, _StopOnRead(vm.board), "stop-on-read")
        # mov dx,0x530; in al,dx; hlt  (0x530: a port no board device claims)
        vm.board.memory.write(0x7C00, bytes([0xBA, 0x30, 0x05, 0xEC, 0xF4]))
        state = CpuState()
        for name in ("es", "ss", "ds", "fs", "gs"):
            state.segments[name] = SegmentState.real_mode(0)
        state.segments["cs"] = SegmentState.real_mode(0, code=True)
        state.rip = 0x7C00
        vm.engine.set_state(state)
        reason = vm.run(10)
        assert reason.kind is StopKind.PAUSED and reason.message == "port read"
        after = take_snapshot(vm).cpu
        assert after.gprs[0] & 0xFF == 0x5A  # AL holds the IN result
        assert after.rip == 0x7C04  # past the IN: a clean instruction boundary
    finally:
        vm.close()


@requires_kvm
def test_restore_under_kvm_keeps_guest_time_and_timers():
    board_vm = VirtualMachine(engine="interp", ram_size=4 << 20)
    try:
        board_vm.load(ImageSpec.bundled("hello"))
        board = board_vm.board
        init_pics(board)
        board.ports.write(PIT_CW, 1, 0x34)
        board.ports.write(PIT_CH0, 1, 0x9C)
        board.ports.write(PIT_CH0, 1, 0x2E)
        board.clock.advance(7 * MS)
        deadlines = pending_deadlines(board)
        snapshot = take_snapshot(board_vm)
    finally:
        board_vm.close()
    vm = restore_snapshot(snapshot, "kvm")
    try:
        assert vm.board.clock.source is ClockSource.VCPU
        assert pending_deadlines(vm.board) == deadlines
        assert snapshot.guest_ns <= vm.board.clock.now_ns() < snapshot.guest_ns + 1000 * MS
    finally:
        vm.close()
