"""Stack instructions: PUSH POP PUSHA POPA PUSHF POPF ENTER LEAVE (SDM Vol. 2).

The push/pop width is iced's `stack_pointer_increment` (operand size, 8 in
64-bit mode for most forms); the stack pointer width is SS.B (Cpu.stack_mask).
"""

from __future__ import annotations

from iced_x86 import Code, Mnemonic

from pyvmm.cpu.state import CR0_PE, FLAG_IF, FLAG_IOPL, FLAG_RF, FLAG_TF, FLAG_VM
from pyvmm.engines.interp.builder import SEGREG, Handler, Insn
from pyvmm.engines.interp.cpu import SS_SEG, Cpu
from pyvmm.engines.interp.faults import GP, CpuFault
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.semantics.datamov import load_segment
from pyvmm.engines.interp.signals import END_BATCH

# ENTER/LEAVE operand size by iced Code: iced reports LEAVE's stack increment as 0 and
# ENTER's as -(size * (level + 1) + frame), so neither gives the push width.
_FRAME_WIDTH = {Code.LEAVEW: 2, Code.LEAVED: 4, Code.LEAVEQ: 8,
                Code.ENTERW_IMM16_IMM8: 2, Code.ENTERD_IMM16_IMM8: 4,
                Code.ENTERQ_IMM16_IMM8: 8}


def _width(b: Insn) -> int:
    """Bytes one push/pop of this instruction moves (operand size; 8 for most 64-bit forms)."""
    width = _FRAME_WIDTH.get(b.code)
    if width is not None:
        return width
    return abs(b.ins.stack_pointer_increment) or b.size(0)


@semantic(Mnemonic.PUSH)
def _push(b: Insn) -> Handler:
    size = _width(b)
    if b.kind(0) == 0 and b.ins.op_register(0) in SEGREG:
        return b.compile(f"cpu.push(cpu.seg_sel[{SEGREG[b.ins.op_register(0)]}], {size})\n"
                         f"{b.next}")
    if b.is_imm(0):
        return b.compile(f"{b.push(b.const(b.imm(0, size)), size)}\n{b.next}")
    if b.is_reg(0) and b.reg(0)[0] == 4 and b.cpu.is_8086:
        # The 8086 pushes SP as it is *after* the decrement.
        return b.compile(f"cpu.push((regs[4] - 2) & 0xFFFF, 2)\n{b.next}")
    return b.compile(f"{b.push(b.get(0), size)}\n{b.next}")


@semantic(Mnemonic.POP)
def _pop(b: Insn) -> Handler:
    size = _width(b)
    if b.kind(0) == 0 and b.ins.op_register(0) in SEGREG:
        index = SEGREG[b.ins.op_register(0)]
        cpu = b.cpu
        next_ip = b.next_ip

        def pop_sreg() -> None:
            sp = cpu.regs[4]
            value = cpu.pop(size)
            try:
                load_segment(cpu, index, value & 0xFFFF)
            except CpuFault:
                cpu.regs[4] = sp
                raise
            cpu.rip = next_ip
            if index == SS_SEG:
                cpu.interrupt_shadow = True
                raise END_BATCH
        return pop_sreg
    if b.is_mem(0):
        # The address is computed with the stack pointer already incremented (SDM "POP").
        if b.cpu.is_286:
            # The 80286 does not undo the increment when the store raises interrupt 13
            # (word at offset 0FFFFH, iAPX 286 Programmer's Reference, "POP"): like its
            # string index registers, SP stays as the microcode left it (recorded).
            return b.compile(f"v = cpu.pop({size})\nea = {b.ea()}\n"
                             f"write({b.seg()}, ea, {size}, v)\n{b.next}")
        return b.compile(f"""
sp = regs[4]
v = cpu.pop({size})
try:
    ea = {b.ea()}
    write({b.seg()}, ea, {size}, v)
except CpuFault:
    regs[4] = sp
    raise
{b.next}
""")
    return b.compile(f"{b.pop('v', size)}\n{b.set(0, 'v')}\n{b.next}")


@semantic(Mnemonic.PUSHA, Mnemonic.PUSHAD)
def _pusha(b: Insn) -> Handler:
    size = 4 if b.mnemonic == Mnemonic.PUSHAD else 2
    mask = (1 << (8 * size)) - 1
    return b.compile(f"""
sp = regs[4]
try:
    for i in (0, 1, 2, 3):
        cpu.push(regs[i] & {mask}, {size})
    cpu.push(sp & {mask}, {size})
    for i in (5, 6, 7):
        cpu.push(regs[i] & {mask}, {size})
except CpuFault:
    regs[4] = sp
    raise
{b.next}
""")


@semantic(Mnemonic.POPA, Mnemonic.POPAD)
def _popa(b: Insn) -> Handler:
    size = 4 if b.mnemonic == Mnemonic.POPAD else 2
    write = ("regs[i] = v" if size == 4 else "regs[i] = (regs[i] & -65536) | v")
    return b.compile(f"""
sp = regs[4]
vals = []
try:
    for i in range(8):
        vals.append(cpu.pop({size}))
except CpuFault:
    regs[4] = sp
    raise
for i, v in zip((7, 6, 5, 4, 3, 2, 1, 0), vals):
    if i != 4:
        {write}
{b.next}
""")


def _flags_image(cpu: Cpu, size: int) -> int:
    """The FLAGS value PUSHF stores (VM and RF read as 0; SDM "PUSHF")."""
    value = cpu.get_flags() & ~(FLAG_VM | FLAG_RF)
    if cpu.is_8086:
        value |= 0xF000
    elif cpu.is_286 and not cpu.cr0 & CR0_PE:
        value &= ~0xF000
    return value & ((1 << (8 * size)) - 1)


@semantic(Mnemonic.PUSHF, Mnemonic.PUSHFD, Mnemonic.PUSHFQ)
def _pushf(b: Insn) -> Handler:
    size = _width(b)
    cpu = b.cpu
    next_ip = b.next_ip

    def pushf() -> None:
        if cpu.flags & FLAG_VM and cpu.iopl < 3:
            raise CpuFault(GP, 0)
        cpu.push(_flags_image(cpu, size), size)
        cpu.rip = next_ip
    return pushf


def write_flags(cpu: Cpu, value: int, size: int, allow_iopl: bool | None = None) -> None:
    """POPF/IRET flag update with the privilege rules of SDM "POPF" (Table 4-?)."""
    old = cpu.get_flags()
    changeable = 0x3F7FD5 if not cpu.legacy else 0x7FD5  # status, TF IF DF OF IOPL NT AC ID...
    changeable &= ~(FLAG_VM | 0x180000)  # VM, VIF, VIP are never changed by POPF
    if cpu.cr0 & CR0_PE:
        if cpu.cpl > 0 and not allow_iopl:
            changeable &= ~FLAG_IOPL
        if cpu.cpl > cpu.iopl:
            changeable &= ~FLAG_IF
    elif cpu.is_286:
        changeable &= ~0xF000  # real-mode 80286: IOPL and NT stay 0, bit 15 is 0
    if size == 2:
        changeable &= 0xFFFF
    new = (old & ~changeable) | (value & changeable)
    if cpu.is_8086:
        new |= 0xF000
    cpu.set_flags(new)


@semantic(Mnemonic.POPF, Mnemonic.POPFD, Mnemonic.POPFQ)
def _popf(b: Insn) -> Handler:
    size = _width(b)
    cpu = b.cpu
    next_ip = b.next_ip

    def popf() -> None:
        if cpu.flags & FLAG_VM and cpu.iopl < 3:
            raise CpuFault(GP, 0)
        value = cpu.pop(size)
        enabled = not cpu.flags & FLAG_IF
        write_flags(cpu, value, size)
        cpu.rip = next_ip
        if enabled and cpu.flags & FLAG_IF or cpu.flags & FLAG_TF:
            raise END_BATCH  # an interrupt window opened, or single-stepping starts
    return popf


@semantic(Mnemonic.LEAVE)
def _leave(b: Insn) -> Handler:
    """SDM "LEAVE": SP/ESP/RSP (stack-address size) = BP/EBP/RBP, then pop BP (operand size)."""
    size = _width(b)
    set_bp = {2: "regs[5] = (regs[5] & -65536) | v", 4: "regs[5] = v", 8: "regs[5] = v"}[size]
    return b.compile(f"""
sp = regs[4]
mask = cpu.stack_mask
regs[4] = (sp & ~mask) | (regs[5] & mask)
try:
    v = cpu.pop({size})
except CpuFault:
    regs[4] = sp
    raise
{set_bp}
{b.next}
""")


@semantic(Mnemonic.ENTER)
def _enter(b: Insn) -> Handler:
    """SDM "ENTER": push BP, copy level-1 frame pointers, push FrameTemp, allocate.

    BP's decrement and the new SP use the stack-address size (SS.B / 64-bit);
    the pushes and the width of the new BP use the operand size (outside 64-bit
    mode: `data32 enter` with a 16-bit stack sets EBP to the zero-extended SP).
    """
    size = _width(b)
    frame = b.ins.immediate(0) & 0xFFFF
    level = b.ins.immediate(1) & 0x1F
    cpu = b.cpu
    next_ip = b.next_ip
    vmask = (1 << (8 * size)) - 1

    def enter() -> None:
        regs = cpu.regs
        mask = cpu.stack_mask
        saved = (regs[4], regs[5])
        try:
            cpu.push(regs[5] & vmask, size)
            frame_temp = regs[4] & mask
            bp = regs[5] & mask
            for _ in range(1, level):
                bp = (bp - size) & mask
                cpu.push(cpu.read(SS_SEG, bp, size), size)
            if level:
                cpu.push(frame_temp & vmask, size)
            new_sp = ((regs[4] & mask) - frame) & mask
            if frame:
                cpu.read(SS_SEG, new_sp, 1)  # the new stack top must be valid
        except CpuFault:
            regs[4], regs[5] = saved
            raise
        if cpu.long64:
            regs[5] = frame_temp  # RBP <- FrameTemp, whatever the operand size
        elif size == 4:
            regs[5] = frame_temp  # EBP <- FrameTemp (zero-extended SP with a 16-bit stack)
        else:
            regs[5] = (regs[5] & -65536) | (frame_temp & 0xFFFF)  # BP <- FrameTemp[15:0]
        regs[4] = (regs[4] & ~mask) | new_sp
        cpu.rip = next_ip
    return enter
