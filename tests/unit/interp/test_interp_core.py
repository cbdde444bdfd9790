"""Interpreter core: exception delivery, privilege changes, SYSCALL, SMC, STI shadow."""

from __future__ import annotations

import pytest

from pyvmm.cpu.state import (
    EFER_SCE,
    FLAG_IF,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    CpuState,
    SegmentState,
)
from pyvmm.machine.stop import StopKind
from tests.unit.interp import guest
from tests.unit.interp.guest import (
    HAVE_NASM,
    KERNEL_STACK,
    assemble,
    long_mode_state,
    machine,
    set_gate,
)

pytestmark = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed")

CODE = 0x200000
HANDLER = 0x201000
HANDLER2 = 0x202000


def _load(board, address: int, source: str, bits: int = 64) -> None:  # noqa: ANN001
    board.memory.write(address, assemble(source, address, bits))


def test_page_fault_pushes_error_code_and_sets_cr2() -> None:
    board, engine = machine()
    _load(board, CODE, "mov rax, [0x900000]\nhlt")  # beyond the 8 MiB mapped
    _load(board, HANDLER, "pop rbx\nmov rcx, cr2\nhlt")
    set_gate(board, 14, HANDLER)
    engine.set_state(long_mode_state(board, CODE))
    stop = engine.run(timeout=5)
    assert stop.kind is StopKind.HALTED, stop.describe()
    state = engine.get_state()
    assert state.gprs[3] == 0  # not present, read, supervisor
    assert state.gprs[1] == 0x900000 == state.cr2
    # The frame's saved RIP is the faulting instruction (a fault, not a trap).
    assert board.memory.read_u64(state.gprs[4]) == CODE
    assert board.stats.get("exceptions", "#PF") == 1


def test_write_fault_on_user_page_error_code() -> None:
    board, engine = machine()
    board.memory.write_u64(guest.PD + 8 * 4, 0)  # (unmapped already) keep layout explicit
    _load(board, CODE, "mov qword [0x900008], 1\nhlt")
    _load(board, HANDLER, "pop rbx\nmov rcx, cr2\nhlt")
    set_gate(board, 14, HANDLER)
    engine.set_state(long_mode_state(board, CODE))
    assert engine.run(timeout=5).kind is StopKind.HALTED
    state = engine.get_state()
    assert state.gprs[3] == 0x2  # write to a not-present page
    assert state.gprs[1] == 0x900008


def test_general_protection_error_code_names_selector() -> None:
    board, engine = machine()
    _load(board, CODE, "mov ax, 0x1238\nmov ds, ax\nhlt")  # beyond the GDT limit
    _load(board, HANDLER, "pop rbx\nhlt")
    set_gate(board, 13, HANDLER)
    engine.set_state(long_mode_state(board, CODE))
    assert engine.run(timeout=5).kind is StopKind.HALTED
    assert engine.get_state().gprs[3] == 0x1238


def test_double_fault_then_triple_fault() -> None:
    board, engine = machine()
    _load(board, CODE, "ud2")
    state = long_mode_state(board, CODE)
    state.idtr.limit = 0  # every delivery fails: #UD -> #GP -> #GP => #DF -> triple
    engine.set_state(state)
    stop = engine.run(timeout=5)
    assert stop.kind is StopKind.TRIPLE_FAULT
    assert "#DF" in stop.message


def test_double_fault_handler_runs_on_ist() -> None:
    board, engine = machine()
    _load(board, CODE, "mov ax, 0x1238\nmov ds, ax")
    _load(board, HANDLER, "pop rbx\nmov rcx, rsp\nhlt")
    set_gate(board, 8, HANDLER, ist=1)
    # Gate 13 is not present: #GP -> #NP(13*16+2) while delivering => #DF.
    engine.set_state(long_mode_state(board, CODE))
    assert engine.run(timeout=5).kind is StopKind.HALTED
    state = engine.get_state()
    assert state.gprs[3] == 0  # #DF error code
    assert state.gprs[1] == guest.IST_STACK - 40  # frame of 5 qwords on IST1


def test_ring3_to_ring0_through_gate_and_iret_back() -> None:
    board, engine = machine()
    _load(board, CODE, "int 0x80\nmov rdx, cs\nmov rsi, rsp\nint 0x81")
    _load(board, HANDLER, "mov rax, cs\nmov rcx, rsp\nmov rdi, ss\niretq")
    _load(board, HANDLER2, "hlt")
    set_gate(board, 0x80, HANDLER, dpl=3)
    set_gate(board, 0x81, HANDLER2, dpl=3)
    engine.set_state(long_mode_state(board, CODE, user=True))
    stop = engine.run(timeout=5)
    assert stop.kind is StopKind.HALTED, stop.describe()
    state = engine.get_state()
    assert state.gprs[0] & 3 == 0  # CS in the handler: ring 0
    assert state.gprs[1] == KERNEL_STACK - 40  # stack switched to TSS.RSP0
    assert state.gprs[7] & 3 == 0  # SS loaded with a null selector at CPL 0
    assert state.gprs[2] == guest.UCODE  # back in ring 3 after IRETQ
    assert state.gprs[6] == guest.USER_STACK  # user stack restored


def test_int_to_dpl0_gate_from_ring3_is_gp() -> None:
    board, engine = machine()
    _load(board, CODE, "int 0x80")
    _load(board, HANDLER, "pop rbx\nhlt")
    set_gate(board, 0x80, HANDLER2, dpl=0)
    set_gate(board, 13, HANDLER)
    engine.set_state(long_mode_state(board, CODE, user=True))
    assert engine.run(timeout=5).kind is StopKind.HALTED
    assert engine.get_state().gprs[3] == 0x80 * 8 + 2  # IDT-format error code


def test_syscall_and_sysret() -> None:
    board, engine = machine()
    _load(board, CODE, "mov eax, 7\nsyscall\nmov rdx, cs\nmov rdi, ss\nint 0x81")
    _load(board, HANDLER, "mov rbx, rcx\nmov rsi, r11\nmov r8, cs\nadd rax, 1\no64 sysret")
    _load(board, HANDLER2, "hlt")
    set_gate(board, 0x81, HANDLER2, dpl=3)
    state = long_mode_state(board, CODE, user=True)
    state.efer |= EFER_SCE
    # STAR[47:32] = kernel CS (SS = +8); STAR[63:48] + 16 = user CS64, +8 = user SS.
    state.msrs = {MSR_STAR: (0x13 << 48) | (0x08 << 32), MSR_LSTAR: HANDLER,
                  MSR_SFMASK: FLAG_IF}
    state.rflags |= FLAG_IF
    engine.set_state(state)
    stop = engine.run(timeout=5)
    assert stop.kind is StopKind.HALTED, stop.describe()
    out = engine.get_state()
    syscall_len = 5 + 2  # mov eax, imm32 (5 bytes) + syscall (2)
    assert out.gprs[3] == CODE + syscall_len  # RCX = return RIP
    assert out.gprs[6] & FLAG_IF  # R11 = RFLAGS with IF
    assert out.gprs[8] == 0x08  # kernel CS
    assert out.gprs[0] == 8
    assert out.gprs[2] == 0x23 and out.gprs[7] == 0x1B  # CS = STAR+16|3, SS = STAR+8|3


def test_self_modifying_code_is_redecoded() -> None:
    board, engine = machine()
    code = assemble("""
        mov cx, 2
    top:
        mov al, 0x11
        mov byte [top + 1], 0x42
        loop top
        hlt
    """, 0x1000, 16)
    board.memory.write(0x1000, code)
    state = CpuState()
    state.rip = 0x1000
    engine.set_state(state)
    assert engine.run(timeout=5).kind is StopKind.HALTED
    assert engine.get_state().gprs[0] & 0xFF == 0x42
    assert board.stats.get("decode", "invalidate") >= 1


def test_device_write_to_code_page_is_seen() -> None:
    """Memory written by something other than the CPU (a device, a hypercall)
    must not leave stale decoded code behind (GuestMemory.write_observers)."""
    board, engine = machine()
    board.memory.write(0x1000, assemble("mov al, 0x11\nhlt", 0x1000, 16))
    state = CpuState()
    state.rip = 0x1000
    engine.set_state(state)
    assert engine.run(timeout=5).kind is StopKind.HALTED
    assert engine.get_state().gprs[0] & 0xFF == 0x11
    board.memory.write(0x1001, b"\x42")  # "DMA": patch the immediate
    engine.cpu.rip = 0x1000  # resume without set_state, which would drop the cache anyway
    engine.cpu.halted = False
    assert engine.run(timeout=5).kind is StopKind.HALTED
    assert engine.cpu.regs[0] & 0xFF == 0x42


class _AlwaysPending:
    def interrupt_pending(self) -> bool:
        return True

    def acknowledge(self) -> int:
        return 0x20


def test_sti_shadow_delays_interrupt_by_one_instruction() -> None:
    board, engine = machine()
    board.interrupt_controller = _AlwaysPending()
    board.memory.write(0x1000, assemble("sti\nmov bx, 1\nmov bx, 2\nhlt", 0x1000, 16))
    board.memory.write(0x2000, assemble("mov cx, bx\nhlt", 0x2000, 16))
    board.memory.write_u16(0x20 * 4, 0x2000)
    board.memory.write_u16(0x20 * 4 + 2, 0)
    state = CpuState()
    state.rip = 0x1000
    state.gprs[4] = 0x8000
    engine.set_state(state)
    assert engine.run(timeout=5).kind is StopKind.HALTED
    out = engine.get_state()
    assert out.gprs[1] & 0xFFFF == 1  # exactly one instruction ran after STI
    assert board.stats.total("interrupts") == 1
    # IRET frame: return IP points at the second MOV.
    assert board.memory.read_u16(0x8000 - 6) == 0x1000 + 1 + 3


def test_hlt_with_interrupts_disabled_stops_vm() -> None:
    board, engine = machine()
    board.memory.write(0x1000, bytes([0xFA, 0xF4]))  # cli; hlt
    state = CpuState()
    state.rip = 0x1000
    engine.set_state(state)
    stop = engine.run(timeout=5)
    assert stop.kind is StopKind.HALTED and "0000:1002" in stop.message


def test_intercepted_exception_leaves_rip_at_fault() -> None:
    board, engine = machine()
    board.memory.write(0x1000, bytes([0x0F, 0x0B]))  # ud2
    state = CpuState()
    state.rip = 0x1000
    engine.set_state(state)
    engine.intercept_exceptions = {6}
    stop = engine.run(timeout=5)
    assert stop.kind is StopKind.EXCEPTION and stop.vector == 6
    assert engine.get_state().rip == 0x1000


def test_state_round_trip() -> None:
    board, engine = machine()
    state = long_mode_state(board, CODE, user=True)
    state.gprs = list(range(1, 17))
    state.rflags = 0x202 | 0x1 | 0x40
    state.segments["fs"] = SegmentState(selector=0, base=0x12345678, limit=0xFFFFFFFF)
    engine.set_state(state)
    assert engine.get_state() == state


def test_instruction_limit_pauses() -> None:
    board, engine = machine()
    board.memory.write(0x1000, bytes([0xEB, 0xFE]))  # jmp $
    state = CpuState()
    state.rip = 0x1000
    engine.set_state(state)
    engine.max_instructions = 1000
    stop = engine.run(timeout=5)
    assert stop.kind is StopKind.PAUSED
    assert board.stats.instructions == 1000
