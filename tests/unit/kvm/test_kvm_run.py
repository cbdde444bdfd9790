"""The KVM engine's exit handling, driven by tiny guests."""

from __future__ import annotations

import time

import pytest
from kvm_guest import load_long_mode, load_real_mode, requires_kvm

from pyvmm.machine.stop import StopKind

pytestmark = requires_kvm

PRINT_AND_EXIT = """
    mov si, msg
    mov dx, 0xe9
next:
    lodsb
    test al, al
    jz done
    out dx, al
    jmp next
done:
    mov al, 0x21
    out 0xf4, al
    hlt
msg: db "hello, kvm", 0
"""


def test_real_mode_debugcon_and_debug_exit(vm):
    load_real_mode(vm, PRINT_AND_EXIT)
    reason = vm.engine.run(timeout=5)
    assert reason.kind is StopKind.DEBUG_EXIT
    assert reason.guest_status == (0x21 << 1) | 1
    assert vm.debugcon.getvalue() == b"hello, kvm"
    stats = vm.board.stats
    assert stats.get("exits", "io") == len(b"hello, kvm") + 1
    assert stats.get("ports", "debugcon") == len(b"hello, kvm")
    assert stats.guest_seconds is not None and stats.guest_seconds > 0
    # The OUT that stopped the VM has completed: RIP is past it (at the HLT).
    state = vm.engine.get_state()
    assert vm.board.memory.read_u8(state.rip) == 0xF4  # HLT opcode
    # The stop request was consumed: resuming runs on into the HLT (IF=0).
    assert vm.engine.run(timeout=5).kind is StopKind.HALTED


def test_string_out_with_count_above_one(vm):
    load_real_mode(vm, """
    mov si, msg
    mov cx, 7
    mov dx, 0xe9
    cld
    rep outsb
    mov al, 0
    out 0xf4, al
msg: db "rep-out"
""")
    reason = vm.engine.run(timeout=5)
    assert reason.kind is StopKind.DEBUG_EXIT and reason.guest_status == 1
    assert vm.debugcon.getvalue() == b"rep-out"
    # This KVM reports REP OUTS one item per exit (INS comes batched, below).
    assert vm.board.stats.get("exits", "io") == 7 + 1


def test_string_out_exit_with_many_items(vm):
    # A KVM_EXIT_IO with count > 1 as KVM lays it out: `count` items of `size`
    # bytes at run + data_offset (the PIO page that follows struct kvm_run).
    vcpu = vm.engine.vcpu
    run = vcpu.kvm_run
    io = run.exit.io
    io.direction, io.size, io.port, io.count, io.data_offset = 1, 2, 0xE9, 3, 4096
    vcpu.run_map[4096:4102] = b"a\x00b\x00c\x00"
    run.exit_reason = 2  # KVM_EXIT_IO
    assert vcpu.handle_exit(run) is None
    vcpu.io_pending = False  # nothing for KVM to complete: the exit was synthetic
    assert vm.debugcon.getvalue() == b"abc"
    assert vm.board.stats.get("exits", "io") == 1


def test_string_in_fills_memory(vm, monkeypatch):
    counts = []
    handle_io = type(vm.engine.vcpu)._handle_io

    def spy(vcpu, run):
        counts.append(run.exit.io.count)
        handle_io(vcpu, run)

    monkeypatch.setattr(type(vm.engine.vcpu), "_handle_io", spy)
    # debugcon reads back 0xE9; REP INSW stores 2-byte items from port 0xE9.
    load_real_mode(vm, """
    xor ax, ax
    mov es, ax
    mov di, 0x6000
    mov cx, 4
    mov dx, 0xe9
    cld
    rep insw
    mov al, 0
    out 0xf4, al
""")
    vm.board.memory.write(0x6000, b"\x11" * 10)
    assert vm.engine.run(timeout=5).kind is StopKind.DEBUG_EXIT
    assert vm.board.memory.read(0x6000, 10) == b"\xe9\x00" * 4 + b"\x11\x11"
    assert counts[0] == 4  # one exit carried all four items


class RecordingDevice:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int]] = []
        self.reads: list[tuple[int, int]] = []

    def mmio_read(self, offset: int, size: int) -> int:
        self.reads.append((offset, size))
        return 0xA0 + offset

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


def test_mmio_reaches_device_on_the_mmio_bus(vm):
    device = RecordingDevice()
    vm.board.mmio.register(0xA0000, 0x1000, device, "test-device")
    load_real_mode(vm, """
    mov ax, 0xa000
    mov es, ax
    mov byte [es:0x10], 0x5a
    mov dword [es:0x20], 0x11223344
    mov al, [es:0x7]
    out 0xe9, al
    mov ax, [es:0x4]
    out 0xe9, al
    mov al, 0
    out 0xf4, al
""")
    assert vm.engine.run(timeout=5).kind is StopKind.DEBUG_EXIT
    assert device.writes == [(0x10, 1, 0x5A), (0x20, 4, 0x11223344)]
    assert device.reads == [(0x7, 1), (0x4, 2)]
    assert vm.debugcon.getvalue() == bytes((0xA7, 0xA4))
    assert vm.board.stats.get("exits", "mmio") == 4


def test_rom_writes_are_dropped(vm):
    rom = bytearray(b"\xcc" * 0x1000)
    rom[0x100:0x104] = b"ROM!"
    vm.board.map_bios(bytes(rom))  # after the engine exists: mapped on run()
    load_real_mode(vm, """
    mov ax, 0xf000
    mov es, ax
    mov byte [es:0xf100], 'X'
    mov cx, 4
    mov si, 0xf100
    mov dx, 0xe9
    es rep outsb
    mov al, 0
    out 0xf4, al
""")
    assert vm.engine.run(timeout=5).kind is StopKind.DEBUG_EXIT
    assert vm.debugcon.getvalue() == b"ROM!"
    assert vm.board.memory.read(0xFF100, 4) == b"ROM!"


def test_cli_hlt_is_halted(user_vm):
    load_real_mode(user_vm, "cli\nhlt\n")
    reason = user_vm.engine.run(timeout=5)
    assert reason.kind is StopKind.HALTED
    assert "real mode" in reason.message
    assert user_vm.engine.get_state().halted
    assert user_vm.board.stats.get("exits", "hlt") == 1
    # Still halted with IF=0: running again stops at once, without a new exit.
    assert user_vm.engine.run(timeout=5).kind is StopKind.HALTED
    assert user_vm.board.stats.get("exits", "hlt") == 1


def test_cli_hlt_is_halted_under_the_in_kernel_irqchip(vm):
    """KVM runs the HLT itself (no exit): the vCPU is kicked out to look, and a vCPU
    halted with IF=0 stops the run as under --irqchip user, soon."""
    load_real_mode(vm, "cli\nhlt\n")
    start = time.monotonic()
    reason = vm.engine.run(timeout=5)
    assert reason.kind is StopKind.HALTED and "real mode" in reason.message, reason
    assert time.monotonic() - start < 1.0
    assert vm.engine.get_state().halted
    assert vm.board.stats.get("exits", "hlt") == 0
    assert vm.engine.run(timeout=5).kind is StopKind.HALTED
    state = vm.engine.get_state()
    state.rflags |= 1 << 9  # IF: now an interrupt could end the halt, so it waits
    vm.engine.set_state(state)
    assert vm.engine.run(timeout=0.3).kind is StopKind.TIMEOUT


def test_halted_state_with_if_set_waits_for_an_interrupt(user_vm):
    load_real_mode(user_vm, "jmp $\n")
    state = user_vm.engine.get_state()
    state.halted = True
    state.rflags |= 1 << 9  # IF
    user_vm.engine.set_state(state)
    start = time.monotonic()
    assert user_vm.engine.run(timeout=0.2).kind is StopKind.TIMEOUT
    assert time.monotonic() - start < 1.5
    assert user_vm.board.stats.total("exits") == 0  # never entered the guest
    assert user_vm.engine.get_state().halted


def test_emulation_failure_runs_the_instruction_in_the_interpreter(vm):
    # A synthetic KVM_INTERNAL_ERROR_EMULATION at MOV AX, imm16: the interpreter
    # executes it on the same board and the VM goes on under KVM after it.
    load_real_mode(vm, "mov ax, 0x1234\nhlt\n")
    run = vm.engine.vcpu.kvm_run
    run.exit_reason = 17
    run.exit.internal.suberror = 1
    assert vm.engine.vcpu.handle_exit(run) is None
    state = vm.engine.get_state()
    assert state.rip == 0x7C03 and state.gprs[0] & 0xFFFF == 0x1234
    assert vm.board.stats.get("exits", "emulated by the interpreter") == 1
    assert vm.engine.run(timeout=5).kind is StopKind.HALTED  # back under KVM


@pytest.mark.parametrize(("exit_reason", "setup", "expected"), [
    (17, lambda run: setattr(run.exit.internal, "suberror", 3), "event delivery"),
    (9, lambda run: setattr(run.exit.fail_entry, "hardware_entry_failure_reason", 0x80000021),
     "invalid guest state"),
    (99, lambda run: None, "exit reason 99"),
])
def test_error_exits_are_described(vm, exit_reason, setup, expected):
    # Synthetic exits (the kvm_run fields exactly as KVM fills them).
    load_real_mode(vm, "hlt\n")
    run = vm.engine.vcpu.kvm_run
    run.exit_reason = exit_reason
    setup(run)
    reason = vm.engine.vcpu.handle_exit(run)
    assert reason is not None and reason.kind is StopKind.INTERNAL_ERROR
    assert expected in reason.message
    assert "cs:rip 0x0000:0x7c00 in real mode" in reason.message


def test_long_mode_ring0_out(vm):
    load_long_mode(vm, """
    mov rax, 0x1122334455667788
    mov rbx, rax
    shr rbx, 32
    mov dx, 0xe9
    mov al, bl
    out dx, al
    mov al, 0x2a
    out 0xf4, al
""")
    reason = vm.engine.run(timeout=5)
    assert reason.kind is StopKind.DEBUG_EXIT and reason.guest_status == (0x2A << 1) | 1
    assert vm.debugcon.getvalue() == b"\x44"
    state = vm.engine.get_state()
    assert state.mode_name() == "64-bit"
    assert state.rbx == 0x11223344


def test_long_mode_ring3_out(vm):
    # IOPL=3 lets ring 3 use OUT; 64-bit ring-3 code runs natively here.
    load_long_mode(vm, """
    mov ecx, 1000
loop_:
    dec ecx
    jnz loop_
    mov dx, 0xe9
    mov al, 'u'
    out dx, al
    mov al, 3
    out 0xf4, al
""", ring=3)
    reason = vm.engine.run(timeout=5)
    assert reason.kind is StopKind.DEBUG_EXIT and reason.guest_status == 7
    assert vm.debugcon.getvalue() == b"u"
    state = vm.engine.get_state()
    assert state.cpl == 3 and state.rcx == 0


@pytest.mark.parametrize(("ring", "code", "selector"),
                         [(0, "ud2", "0x0008"), (3, "int3", "0x001b")])
def test_triple_fault_on_empty_idt(vm, ring, code, selector):
    # IDT limit 0: the exception's delivery faults (#GP), so does the #DF: shutdown.
    # (Ring-0 INT3 is not used: this nested host's emulator refuses it.)
    load_long_mode(vm, code + "\n", ring=ring)
    reason = vm.engine.run(timeout=5)
    assert reason.kind is StopKind.TRIPLE_FAULT, reason.describe()
    assert f"cs:rip {selector}:0x1000" in reason.message
    assert "64-bit mode" in reason.message
    assert vm.board.stats.get("exits", "shutdown") == 1


def test_timeout_interrupts_ring0_spin(vm):
    load_long_mode(vm, "jmp $\n")
    start = time.monotonic()
    reason = vm.engine.run(timeout=0.3)
    elapsed = time.monotonic() - start
    assert reason.kind is StopKind.TIMEOUT
    assert 0.3 <= elapsed < 1.5
    assert vm.board.stats.get("exits", "intr") >= 1


def test_timeout_interrupts_ring3_spin(vm):
    load_long_mode(vm, "jmp $\n", ring=3)
    start = time.monotonic()
    assert vm.engine.run(timeout=0.2).kind is StopKind.TIMEOUT
    assert time.monotonic() - start < 1.5
    # Resumable: a second run times out again, still spinning in place.
    assert vm.engine.run(timeout=0.1).kind is StopKind.TIMEOUT
    assert vm.engine.get_state().rip == 0x10000


def test_a_kvm_without_the_in_kernel_irqchip_is_refused_with_the_reason(monkeypatch):
    """KVM_CAP_IRQCHIP absent (as KVM_CHECK_EXTENSION would answer on such a host):
    the default --irqchip kernel is refused, naming the capability and the way out."""
    from pyvmm.board.pc import PcBoard
    from pyvmm.engines.kvm import KvmEngine
    from pyvmm.engines.kvm import ioctls as k
    from pyvmm.engines.kvm.vm import KvmVm
    from pyvmm.errors import EngineUnavailable

    real_check = KvmVm.check
    monkeypatch.setattr(KvmVm, "check",
                        lambda self, cap: cap != k.KVM_CAP_IRQCHIP and real_check(self, cap))
    board = PcBoard(ram_size=4 << 20)
    with pytest.raises(EngineUnavailable, match=r"KVM_CAP_IRQCHIP.*--irqchip user"):
        KvmEngine(board)
    KvmEngine(board, irqchip="user").close()  # the board's chips need no capability
