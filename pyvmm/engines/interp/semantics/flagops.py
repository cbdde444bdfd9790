"""Flag instructions: CLC STC CMC CLD STD CLI STI (SDM Vol. 2; CLI/STI: Vol. 3A §6.8.1)."""

from __future__ import annotations

from iced_x86 import Mnemonic

from pyvmm.cpu.state import CR0_PE, FLAG_IF
from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.faults import GP, CpuFault
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.signals import END_BATCH


@semantic(Mnemonic.CLC, Mnemonic.STC, Mnemonic.CMC)
def _carry(b: Insn) -> Handler:
    expr = {Mnemonic.CLC: "f & -2", Mnemonic.STC: "f | 1", Mnemonic.CMC: "f ^ 1"}[b.mnemonic]
    return b.compile(f"f = fl.materialize(cpu)\ncpu.flags = {expr}\n{b.next}")


@semantic(Mnemonic.CLD, Mnemonic.STD)
def _direction(b: Insn) -> Handler:
    expr = "cpu.flags & ~0x400" if b.mnemonic == Mnemonic.CLD else "cpu.flags | 0x400"
    return b.compile(f"cpu.flags = {expr}\n{b.next}")


@semantic(Mnemonic.CLI, Mnemonic.STI)
def _interrupt_flag(b: Insn) -> Handler:
    cpu = b.cpu
    next_ip = b.next_ip
    sti = b.mnemonic == Mnemonic.STI

    def handler() -> None:
        if cpu.cr0 & CR0_PE and not cpu.legacy and cpu.cpl > cpu.iopl:
            raise CpuFault(GP, 0)
        cpu.rip = next_ip
        if not sti:
            cpu.flags &= ~FLAG_IF
            return
        if not cpu.flags & FLAG_IF:
            cpu.flags |= FLAG_IF
            cpu.interrupt_shadow = True  # interrupts wait one more instruction
            raise END_BATCH
    return handler
