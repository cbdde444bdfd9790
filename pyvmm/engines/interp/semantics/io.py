"""Port I/O: IN and OUT (SDM Vol. 1 §19.5 for the IOPL / I/O-bitmap check, in Cpu.port_*)."""

from __future__ import annotations

from iced_x86 import Mnemonic

from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.signals import END_BATCH

_ACC_SET = {1: "regs[0] = (regs[0] & -256) | v", 2: "regs[0] = (regs[0] & -65536) | v",
            4: "regs[0] = v"}


@semantic(Mnemonic.IN)
def _in(b: Insn) -> Handler:
    size = b.size(0)
    port = b.const(b.ins.immediate(1) & 0xFF) if b.is_imm(1) else "(regs[2] & 0xFFFF)"
    return b.compile(f"v = cpu.port_in({port}, {size})\n{_ACC_SET[size]}\n{b.next}")


@semantic(Mnemonic.OUT)
def _out(b: Insn) -> Handler:
    size = b.size(1)
    port = b.const(b.ins.immediate(0) & 0xFF) if b.is_imm(0) else "(regs[2] & 0xFFFF)"
    signal = b.const(END_BATCH)
    # A port write can raise an IRQ or stop the VM: end the batch so the loop looks.
    return b.compile(f"cpu.port_out({port}, {size}, {b.get(1)})\n{b.next}\nraise {signal}")
