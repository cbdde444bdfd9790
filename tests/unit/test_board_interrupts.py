"""GSI routing on the PC board: devices -> GSI -> (i8259 pair and I/O APIC) ->
local APIC -> engine, and the local APIC's MMIO page and MSRs."""

import io

import pytest

from pyvmm.board import irq_routing
from pyvmm.board.pc import IRQ_COM1, IRQ_PIT, PcBoard
from pyvmm.cpu.cpuid import CPUID_1_EDX_APIC
from pyvmm.devices.ioapic import DEFAULT_BASE as IOAPIC
from pyvmm.devices.ioapic import RTE_LEVEL, RTE_MASKED, RTE_REMOTE_IRR
from pyvmm.devices.lapic import DEFAULT_BASE as LAPIC
from pyvmm.devices.lapic import LVT_MASKED, MSR_IA32_APIC_BASE, REG_EOI, REG_SVR, REG_VERSION
from pyvmm.machine.clock import ClockSource
from pyvmm.machine.stop import StopKind
from pyvmm.schema import StateError

MIB = 1 << 20
PIRQRC_A = 0x60
ENABLE, BSP = 1 << 11, 1 << 8


@pytest.fixture
def board():
    b = PcBoard(ram_size=16 * MIB, serial_output=io.BytesIO(), clock_source=ClockSource.MANUAL)
    yield b
    b.close()


def route(board, pin, vector, level=False, masked=False):
    """Program I/O APIC pin `pin` -> `vector`, physical destination APIC 0."""
    low = vector | (RTE_LEVEL if level else 0) | (RTE_MASKED if masked else 0)
    for index, value in ((0x10 + 2 * pin, low), (0x11 + 2 * pin, 0)):
        board.mmio.write(IOAPIC, 4, index)
        board.mmio.write(IOAPIC + 0x10, 4, value)


def apic_on(board):
    """Software-enable vCPU 0's APIC and mask LINT0 (no more virtual wire)."""
    board.mmio.write(LAPIC + REG_SVR, 4, 0x1FF)
    board.mmio.write(LAPIC + 0x350, 4, LVT_MASKED)


def test_the_routing_table_is_the_pc_one():
    assert irq_routing.isa_gsi(0) == 2  # the interrupt source override
    assert [irq_routing.isa_gsi(n) for n in (1, 3, 4, 8, 14, 15)] == [1, 3, 4, 8, 14, 15]
    assert irq_routing.isa_gsi(2) is None  # the cascade
    assert irq_routing.SOURCE_OVERRIDES[0] == irq_routing.SourceOverride(0, 2, 0)
    assert [irq_routing.pirq_gsi(p) for p in range(4)] == [16, 17, 18, 19]
    assert irq_routing.pci_pirq(slot=1, pin=0) == 0 and irq_routing.pci_pirq(3, 1) == 3


def test_isa_irq_reaches_pic_input_and_ioapic_pin(board):
    route(board, IRQ_COM1, 0x44)
    apic_on(board)
    line = board.irq_line(IRQ_COM1)
    line.raise_()
    assert board.pic.master.s.irr & (1 << IRQ_COM1)
    lapic = board.interrupt_controller
    assert lapic.interrupt_pending() and lapic.acknowledge() == 0x44
    board.mmio.write(LAPIC + REG_EOI, 4, 0)
    assert not lapic.interrupt_pending()


def test_irq0_arrives_on_ioapic_pin_2_not_pin_0(board):
    route(board, 0, 0x30)
    route(board, 2, 0x32)
    apic_on(board)
    board.irq_line(IRQ_PIT).pulse()
    assert board.interrupt_controller.acknowledge() == 0x32
    assert board.ioapic.s.asserted == 0


def test_virtual_wire_by_default_pic_interrupts_reach_the_cpu(board):
    for port, value in ((0x20, 0x11), (0x21, 0x08), (0x21, 0x04), (0x21, 0x01)):
        board.ports.write(port, 1, value)
    board.irq_line(IRQ_COM1).raise_()
    lapic = board.interrupt_controller
    assert lapic.interrupt_pending() and lapic.acknowledge() == 0x08 + IRQ_COM1


def test_level_pin_remote_irr_cleared_by_the_eoi_broadcast(board):
    route(board, 16, 0x50, level=True)
    apic_on(board)
    pirq = board.wiring.pirq_line(0)
    pirq.raise_()
    lapic = board.interrupt_controller
    assert lapic.acknowledge() == 0x50
    assert board.ioapic.s.redirection[16] & RTE_REMOTE_IRR
    pirq.lower()
    board.mmio.write(LAPIC + REG_EOI, 4, 0)
    assert not board.ioapic.s.redirection[16] & RTE_REMOTE_IRR
    assert not lapic.interrupt_pending()


def test_pirq_steering_follows_piix3_pirqrc(board):
    pirq = board.wiring.pirq_line(0)  # PIRQA
    pirq.raise_()
    assert board.ioapic.s.asserted == 1 << 16
    assert board.pic.slave.s.levels == 0  # PIRQRC A: not routed (reset 0x80)
    board.isa_bridge.config_write(PIRQRC_A, 1, 11)
    assert board.pic.slave.s.levels == 1 << 3  # IRQ 11 = slave IR3
    board.isa_bridge.config_write(PIRQRC_A, 1, 10)
    assert board.pic.slave.s.levels == 1 << 2
    restored = PcBoard(ram_size=16 * MIB, clock_source=ClockSource.MANUAL)
    restored.set_state(board.get_state())
    restored.wiring.pirq_line(0).raise_()
    assert restored.pic.slave.s.levels == 1 << 2


def test_lapic_page_is_at_apic_base_and_moves_with_it(board):
    assert board.mmio.read(LAPIC + REG_VERSION, 4) == 0x00050014
    lapic = board.lapics[0]
    assert lapic.wrmsr(MSR_IA32_APIC_BASE, 0xFEB00000 | ENABLE)
    assert board.mmio.read(0xFEB00000 + REG_VERSION, 4) == 0x00050014
    assert board.stop_request is None
    board.mmio.read(LAPIC + REG_VERSION, 4)
    assert board.stop_request.kind is StopKind.UNMAPPED_ACCESS
    board.stop_request = None
    assert lapic.wrmsr(MSR_IA32_APIC_BASE, 0xFEB00000)  # globally disabled: not decoded
    board.mmio.read(0xFEB00000 + REG_VERSION, 4)
    assert board.stop_request is not None
    assert not lapic.wrmsr(MSR_IA32_APIC_BASE, 1 << 40 | ENABLE)  # reserved bits: #GP


def test_lapic_base_over_ram_is_not_decoded(board):
    lapic = board.lapics[0]
    assert lapic.wrmsr(MSR_IA32_APIC_BASE, 0x100000 | ENABLE)
    assert board.stats.get("lapic", "base over RAM refused") == 1
    assert board.mmio.find(0x100000) is None


def test_lapic_and_ioapic_state_round_trip(board):
    route(board, 4, 0x44, level=True)
    apic_on(board)
    board.mmio.write(LAPIC + 0x3E0, 4, 0x3)  # divide by 16
    board.mmio.write(LAPIC + 0x320, 4, 0x20000 | 0x40)  # periodic, vector 0x40
    board.mmio.write(LAPIC + 0x380, 4, 1000)
    board.clock.advance(5000)
    state = board.get_state()
    restored = PcBoard(ram_size=16 * MIB, clock_source=ClockSource.MANUAL)
    restored.set_state(state)
    assert restored.get_state() == state
    for b in (board, restored):
        b.clock.advance(20_000)
        b.clock.run_due()
    assert restored.get_state() == board.get_state()
    assert restored.lapics[0].s.irr & (1 << 0x40)
    bad = board.get_state()
    bad["lapics"][0]["apic_base"] = 1 << 50
    with pytest.raises(StateError, match="lapics.0.apic_base"):
        restored.set_state(bad)
    bad = board.get_state()
    bad["devices"]["ioapic"]["redirection"] = [0] * 23
    with pytest.raises(StateError, match="devices.ioapic.redirection"):
        restored.set_state(bad)


def test_interpreter_msrs_and_cpuid_apic_bit(board):
    from pyvmm.engines.interp.engine import InterpreterEngine
    from tests.unit.interp.guest import HAVE_NASM, assemble, long_mode_state
    if not HAVE_NASM:
        pytest.skip("nasm is not installed")
    engine = InterpreterEngine(board)
    code = """
        mov ecx, 0x1b
        rdmsr
        mov r8d, eax            ; APIC base as read
        mov eax, 1
        cpuid
        mov r9d, edx            ; CPUID.1:EDX with the APIC enabled
        mov ecx, 0x1b
        mov eax, 0xfee00000     ; global disable (bit 11 clear)
        xor edx, edx
        wrmsr
        mov eax, 1
        cpuid
        mov r10d, edx           ; ... and disabled
        mov ecx, 0x1b
        mov eax, 0xfee00800
        mov edx, 0x100          ; bit 40: reserved -> #GP
        wrmsr
        hlt
    """
    board.memory.write(0x1000, assemble(code, 0x1000))
    board.memory.write(0x2000, assemble("mov r11, 0xd\nhlt", 0x2000))
    from tests.unit.interp.guest import set_gate
    state = long_mode_state(board, 0x1000)
    engine.set_state(state)
    set_gate(board, 13, 0x2000)
    assert engine.run(timeout=10).kind is StopKind.HALTED
    regs = engine.get_state().gprs
    assert regs[8] == 0xFEE00900
    assert regs[9] & CPUID_1_EDX_APIC and not regs[10] & CPUID_1_EDX_APIC
    assert regs[11] == 0xD  # the reserved-bit write took #GP
    assert engine.get_state().apic_base == 0xFEE00000 | BSP  # BSP is read-only
