"""x2APIC mode (Intel SDM Vol. 3A "Extended XAPIC (x2APIC)"): the local APIC's
registers as MSRs 0x800-0x8FF, the mode transitions, 32-bit IDs and LDR,
the 64-bit ICR and SELF IPI; under the interpreter, CPUID.01H:ECX[21]."""

from __future__ import annotations

import io

import pytest

from pyvmm.board.pc import PcBoard
from pyvmm.cpu.cpuid import CPUID_1_ECX_X2APIC
from pyvmm.devices.lapic import APIC_VERSION, DEFAULT_BASE, MSR_IA32_APIC_BASE
from pyvmm.machine.clock import ClockSource
from pyvmm.machine.stop import StopKind

XAPIC, X2APIC, DISABLED = 0xFEE00900, 0xFEE00D00, 0xFEE00100
ID, VERSION, TPR, PPR, EOI, LDR, SVR = 0x802, 0x803, 0x808, 0x80A, 0x80B, 0x80D, 0x80F
ISR, IRR, ESR, ICR, SELF_IPI = 0x810, 0x820, 0x828, 0x830, 0x83F
DFR, ICR_HI, TIMER_CURRENT = 0x80E, 0x831, 0x839


@pytest.fixture
def board():
    b = PcBoard(ram_size=16 << 20, serial_output=io.BytesIO(), clock_source=ClockSource.MANUAL)
    yield b
    b.close()


def test_mode_transitions(board):
    """xAPIC -> x2APIC is allowed, x2APIC -> xAPIC and disabled -> x2APIC are #GP,
    EXTD without EN is invalid; x2APIC -> disabled -> xAPIC is the way back."""
    apic = board.lapics[0]
    assert apic.rdmsr(ID) is None  # x2APIC MSRs outside x2APIC mode: #GP
    assert apic.wrmsr(MSR_IA32_APIC_BASE, X2APIC) and apic.x2apic
    assert board.mmio.find(DEFAULT_BASE) is None  # no MMIO page in x2APIC mode
    assert not apic.wrmsr(MSR_IA32_APIC_BASE, XAPIC)
    assert apic.wrmsr(MSR_IA32_APIC_BASE, DISABLED)
    assert not apic.wrmsr(MSR_IA32_APIC_BASE, X2APIC)  # disabled -> x2APIC
    assert not apic.wrmsr(MSR_IA32_APIC_BASE, DISABLED | 0x400)  # EXTD without EN
    assert apic.wrmsr(MSR_IA32_APIC_BASE, XAPIC)
    assert board.mmio.find(DEFAULT_BASE) is not None  # the page is back
    assert apic.stats.get("lapic", "apic base #GP") == 3


def test_registers_as_msrs(board):
    apic = board.lapics[0]
    assert apic.wrmsr(MSR_IA32_APIC_BASE, X2APIC)
    assert apic.rdmsr(ID) == 0 and apic.rdmsr(VERSION) == APIC_VERSION
    assert apic.rdmsr(LDR) == 1  # cluster 0, bit 0 for x2APIC ID 0
    assert apic.wrmsr(TPR, 0x20) and apic.rdmsr(TPR) == 0x20 and apic.rdmsr(PPR) == 0x20
    assert apic.wrmsr(TPR, 0)
    # Read-only, write-only, absent registers and reserved bits: #GP, counted.
    for index in (ID, VERSION, PPR, LDR, ISR, IRR, TIMER_CURRENT):
        assert not apic.wrmsr(index, 0), hex(index)
    for index in (EOI, SELF_IPI, DFR, ICR_HI, 0x809, 0x80C, 0x840 + 0x10):
        assert apic.rdmsr(index) is None, hex(index)
    assert not apic.wrmsr(TPR, 1 << 32)
    assert not apic.wrmsr(EOI, 1) and not apic.wrmsr(ESR, 1)
    assert apic.stats.get("lapic", "x2apic msr #GP") == 17


def test_self_ipi_and_the_64_bit_icr(board):
    apic = board.lapics[0]
    assert apic.wrmsr(MSR_IA32_APIC_BASE, X2APIC)
    assert apic.wrmsr(SVR, 0x1FF)
    assert apic.wrmsr(SELF_IPI, 0x41)
    assert apic.rdmsr(IRR + 2) == 1 << 1  # vector 0x41: IRR bits 95:64, bit 1
    assert apic.acknowledge() == 0x41 and apic.wrmsr(EOI, 0)
    assert apic.wrmsr(ICR, 0 << 32 | 0x42)  # fixed, physical, x2APIC ID 0
    assert apic.rdmsr(ICR) == 0x42
    assert apic.wrmsr(ICR, 7 << 32 | 0x43)  # an x2APIC ID nobody has
    assert apic.wrmsr(ICR, 0xFFFFFFFF << 32 | 0x44)  # broadcast
    assert apic.wrmsr(ICR, 0x00001 << 32 | 1 << 11 | 0x45)  # logical: cluster 0, bit 0
    assert apic.wrmsr(ICR, 0x10001 << 32 | 1 << 11 | 0x46)  # cluster 1: not us
    pending = [v for v in range(256) if apic.s.irr >> v & 1]
    assert pending == [0x42, 0x44, 0x45]
    assert apic.rdmsr(ICR) >> 32 == 0x10001


def test_snapshot_keeps_x2apic_mode(board):
    apic = board.lapics[0]
    assert apic.wrmsr(MSR_IA32_APIC_BASE, X2APIC)
    assert apic.wrmsr(ICR, 0x10001 << 32 | 1 << 11 | 0x46)
    state = board.get_state()
    other = PcBoard(ram_size=16 << 20, clock_source=ClockSource.MANUAL)
    try:
        other.set_state(state)
        assert other.lapics[0].x2apic and other.mmio.find(DEFAULT_BASE) is None
        assert other.lapics[0].rdmsr(ICR) >> 32 == 0x10001
    finally:
        other.close()


@pytest.mark.parametrize("engine_name", ["interp", "jit"])
def test_under_the_interpreter_and_jit(board, engine_name):
    """RDMSR/WRMSR reach the x2APIC registers; CPUID.01H:ECX[21] says so; an
    x2APIC MSR in xAPIC mode raises #GP(0)."""
    from pyvmm.engines.registry import engine_class
    from tests.unit.interp.guest import HAVE_NASM, assemble, long_mode_state, set_gate
    if not HAVE_NASM:
        pytest.skip("nasm is not installed")
    engine = engine_class(engine_name)(board)
    code = """
        mov eax, 1
        cpuid
        mov r8d, ecx            ; CPUID.1:ECX
        mov ecx, 0x802
        rdmsr                   ; xAPIC mode: #GP, the handler sets r11
        mov ecx, 0x1b
        mov eax, 0xfee00d00     ; EN | EXTD: x2APIC mode
        xor edx, edx
        wrmsr
        mov ecx, 0x80f
        mov eax, 0x1ff
        wrmsr                   ; SVR: software enable
        mov ecx, 0x83f
        mov eax, 0x51
        wrmsr                   ; SELF IPI, vector 0x51
        mov ecx, 0x822
        rdmsr
        mov r9d, eax            ; IRR bits 95:64
        mov ecx, 0x803
        rdmsr
        mov r10d, eax           ; version
        hlt
    """
    board.memory.write(0x1000, assemble(code, 0x1000))
    handler = "mov r11, 0xd\nadd rsp, 8\nadd qword [rsp], 2\niretq"  # skip the RDMSR
    board.memory.write(0x2000, assemble(handler, 0x2000))
    engine.set_state(long_mode_state(board, 0x1000))
    set_gate(board, 13, 0x2000)
    assert engine.run(timeout=10).kind is StopKind.HALTED
    regs = engine.get_state().gprs
    assert regs[8] & CPUID_1_ECX_X2APIC
    assert regs[11] == 0xD  # the #GP
    assert regs[9] == 1 << (0x51 - 64) and regs[10] == APIC_VERSION
    assert engine.get_state().apic_base == 0xFEE00D00
