"""Data movement: MOV MOVZX MOVSX MOVSXD LEA XCHG CMOVcc SETcc XADD CMPXCHG BSWAP,
CBW/CWD families, XLAT, LAHF/SAHF, SALC, NOP, segment-register loads (SDM Vol. 2).
"""

from __future__ import annotations

from iced_x86 import Mnemonic, OpKind, Register

from pyvmm.cpu.state import CR0_PE, FLAG_VM
from pyvmm.engines.interp.builder import GPR, SEGREG, Handler, Insn
from pyvmm.engines.interp.cpu import CS, SS_SEG, Cpu
from pyvmm.engines.interp.faults import UD, CpuFault
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.signals import END_BATCH


def load_segment(cpu: Cpu, index: int, selector: int) -> None:
    """MOV/POP/Lxs to a segment register: real-mode base*16 or protected-mode checks."""
    if not cpu.cr0 & CR0_PE or cpu.flags & FLAG_VM or cpu.legacy:
        cpu.load_real_segment(index, selector)
    else:
        cpu.load_protected_segment(index, selector)


def _is_sreg(b: Insn, i: int) -> bool:
    return b.kind(i) == OpKind.REGISTER and b.ins.op_register(i) in SEGREG


@semantic(Mnemonic.MOV)
def _mov(b: Insn) -> Handler:
    ins = b.ins
    if b.kind(0) == OpKind.REGISTER and ins.op_register(0) not in GPR and \
            ins.op_register(0) not in SEGREG:
        from pyvmm.engines.interp.semantics.system import build_mov_control
        return build_mov_control(b)
    if b.kind(1) == OpKind.REGISTER and ins.op_register(1) not in GPR and \
            ins.op_register(1) not in SEGREG:
        from pyvmm.engines.interp.semantics.system import build_mov_control
        return build_mov_control(b)
    if _is_sreg(b, 0):
        index = SEGREG[ins.op_register(0)]
        if index == CS and not b.cpu.is_8086:
            raise NotImplementedError  # MOV CS is #UD (SDM "MOV")
        cpu = b.cpu
        get = b.reader(1)
        next_ip = b.next_ip
        shadow = index == SS_SEG

        def mov_sreg() -> None:
            load_segment(cpu, index, get() & 0xFFFF)
            cpu.rip = next_ip
            if shadow:  # MOV SS blocks interrupts for one instruction (SDM §6.8.3)
                cpu.interrupt_shadow = True
                raise END_BATCH
        return mov_sreg
    if _is_sreg(b, 1):
        if b.is_mem(0):
            return b.compile(f"{b.set(0, b.get(1))}\n{b.next}")
        # A register destination gets the selector zero-extended (32/64-bit operand size).
        index, size, _ = b.reg(0)
        return b.compile(f"{b.set(0, b.get(1))}\n{b.next}")
    return b.compile(f"{b.set(0, b.get(1))}\n{b.next}")


@semantic(Mnemonic.MOVZX)
def _movzx(b: Insn) -> Handler:
    return b.compile(f"{b.set(0, b.get(1))}\n{b.next}")


@semantic(Mnemonic.MOVSX, Mnemonic.MOVSXD)
def _movsx(b: Insn) -> Handler:
    src = b.size(1)
    sign = 1 << (8 * src - 1)
    # MOVSXD with a 16-bit operand size (66 63 /r) is "MOVSXD r16, r/m16" (SDM Vol. 2B,
    # MOVSX/MOVSXD): a word is read, as on the Intel host (a word 2 bytes before an
    # unmapped page loads, 1 byte before it #PFs; tests/differential/
    # test_fixed_cases_vs_cpu.py).  AMD processors read a doubleword (AMD APM Vol. 3,
    # MOVSXD: "reg/mem32"); pyvmm's CPUID says GenuineIntel.
    return b.compile(f"""
v = {b.get(1)}
{b.set(0, f"(v ^ {b.const(sign)}) - {b.const(sign)}")}
{b.next}
""")


@semantic(Mnemonic.LEA)
def _lea(b: Insn) -> Handler:
    return b.compile(f"{b.set(0, b.ea())}\n{b.next}")


@semantic(Mnemonic.XCHG)
def _xchg(b: Insn) -> Handler:
    if b.is_reg(0) and b.is_reg(1) and b.reg(0) == b.reg(1) and b.size(0) != 4:
        return b.compile(b.next)  # NOP (90) and xchg r, r
    return b.compile(f"""
a = {b.get(0)}
v = {b.get(1)}
{b.set(1, "a")}
{b.set(0, "v")}
{b.next}
""")


@semantic(Mnemonic.NOP, Mnemonic.PAUSE, Mnemonic.PREFETCHNTA,
          Mnemonic.PREFETCHT0, Mnemonic.PREFETCHT1, Mnemonic.PREFETCHT2, Mnemonic.PREFETCHW,
          Mnemonic.LFENCE, Mnemonic.MFENCE, Mnemonic.SFENCE, Mnemonic.ENDBR64,
          Mnemonic.ENDBR32)
def _nop(b: Insn) -> Handler:
    return b.compile(b.next)


@semantic(Mnemonic.CMOVO, Mnemonic.CMOVNO, Mnemonic.CMOVB, Mnemonic.CMOVAE, Mnemonic.CMOVE,
          Mnemonic.CMOVNE, Mnemonic.CMOVBE, Mnemonic.CMOVA, Mnemonic.CMOVS, Mnemonic.CMOVNS,
          Mnemonic.CMOVP, Mnemonic.CMOVNP, Mnemonic.CMOVL, Mnemonic.CMOVGE, Mnemonic.CMOVLE,
          Mnemonic.CMOVG)
def _cmov(b: Insn) -> Handler:
    # The source is read (and may fault) even when the condition is false; a 32-bit
    # destination is zero-extended either way (SDM "CMOVcc").
    cc = b.ins.condition_code
    return b.compile(f"""
v = {b.get(1)}
if CONDITIONS[{cc}](cpu):
    {b.set(0, "v")}
else:
    {b.set(0, b.get(0))}
{b.next}
""")


@semantic(Mnemonic.SETO, Mnemonic.SETNO, Mnemonic.SETB, Mnemonic.SETAE, Mnemonic.SETE,
          Mnemonic.SETNE, Mnemonic.SETBE, Mnemonic.SETA, Mnemonic.SETS, Mnemonic.SETNS,
          Mnemonic.SETP, Mnemonic.SETNP, Mnemonic.SETL, Mnemonic.SETGE, Mnemonic.SETLE,
          Mnemonic.SETG)
def _setcc(b: Insn) -> Handler:
    cc = b.ins.condition_code
    return b.compile(f"{b.set(0, f'1 if CONDITIONS[{cc}](cpu) else 0')}\n{b.next}")


@semantic(Mnemonic.XADD)
def _xadd(b: Insn) -> Handler:
    size = b.size(0)
    return b.compile(f"""
a = {b.get(0)}
v = {b.get(1)}
r = a + v
{b.set(1, "a")}
{b.set(0, "r")}
cpu.lf_op = LF_ADD; cpu.lf_a = a; cpu.lf_b = v; cpu.lf_r = r; cpu.lf_size = {size}
{b.next}
""")


@semantic(Mnemonic.CMPXCHG)
def _cmpxchg(b: Insn) -> Handler:
    size = b.size(0)
    acc = {1: "(regs[0] & 0xFF)", 2: "(regs[0] & 0xFFFF)", 4: "(regs[0] & 0xFFFFFFFF)",
           8: "regs[0]"}[size]
    acc_set = {1: "regs[0] = (regs[0] & -256) | d", 2: "regs[0] = (regs[0] & -65536) | d",
               4: "regs[0] = d", 8: "regs[0] = d"}[size]
    # A memory destination is always written (with its old value on failure: the bus
    # sees a write, SDM "CMPXCHG").  A register destination is left alone on failure:
    # silicon does not zero-extend a 32-bit one then (seen on the differential tester).
    rewrite = b.set(0, "d") if b.is_mem(0) else "pass"
    return b.compile(f"""
d = {b.get(0)}
a = {acc}
r = a - d
cpu.lf_op = LF_SUB; cpu.lf_a = a; cpu.lf_b = d; cpu.lf_r = r; cpu.lf_size = {size}
if r == 0:
    {b.set(0, b.get(1))}
else:
    {rewrite}
    {acc_set}
{b.next}
""")


@semantic(Mnemonic.CMPXCHG8B, Mnemonic.CMPXCHG16B)
def _cmpxchg8b(b: Insn) -> Handler:
    half = 4 if b.mnemonic == Mnemonic.CMPXCHG8B else 8
    if half == 8:
        raise NotImplementedError
    seg = b.seg()
    # One 8-byte operand: limit and page checks cover all of it (an operand at
    # offset 0xFFFC of a 64 KiB segment is #GP, not a wrap), checked for writing.
    return b.compile(f"""
ea = {b.ea()}
v = cpu.read_rmw({seg}, ea, 8)
f = fl.materialize(cpu)
if v == ((regs[2] & 0xFFFFFFFF) << 32) | (regs[0] & 0xFFFFFFFF):
    write({seg}, ea, 8, ((regs[1] & 0xFFFFFFFF) << 32) | (regs[3] & 0xFFFFFFFF))
    cpu.flags = f | 0x40
else:
    write({seg}, ea, 8, v)
    regs[0] = v & 0xFFFFFFFF
    regs[2] = v >> 32
    cpu.flags = f & ~0x40
{b.next}
""")


@semantic(Mnemonic.BSWAP)
def _bswap(b: Insn) -> Handler:
    size = b.size(0)
    if size == 2:
        return b.compile(f"{b.set(0, '0')}\n{b.next}")  # undefined; hardware gives 0
    return b.compile(f"""
{b.set(0, f"int.from_bytes(({b.get(0)}).to_bytes({size}, 'little'), 'big')")}
{b.next}
""")


# Sign extension of the accumulator (SDM "CBW/CWDE/CDQE", "CWD/CDQ/CQO").
_EXTEND = {
    Mnemonic.CBW: "regs[0] = (regs[0] & -65536) | ((((regs[0] & 0xFF) ^ 0x80) - 0x80) & 0xFFFF)",
    Mnemonic.CWDE: "regs[0] = (((regs[0] & 0xFFFF) ^ 0x8000) - 0x8000) & 0xFFFFFFFF",
    Mnemonic.CDQE: "regs[0] = (((regs[0] & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000) "
                   "& 0xFFFFFFFFFFFFFFFF",
    Mnemonic.CWD: "regs[2] = (regs[2] & -65536) | (0xFFFF if regs[0] & 0x8000 else 0)",
    Mnemonic.CDQ: "regs[2] = 0xFFFFFFFF if regs[0] & 0x80000000 else 0",
    Mnemonic.CQO: "regs[2] = 0xFFFFFFFFFFFFFFFF if regs[0] >> 63 else 0",
}


@semantic(*_EXTEND)
def _extend(b: Insn) -> Handler:
    return b.compile(f"{_EXTEND[b.mnemonic]}\n{b.next}")


@semantic(Mnemonic.XLATB)
def _xlat(b: Insn) -> Handler:
    return b.compile(f"""
v = read({b.seg()}, (regs[3] + (regs[0] & 0xFF)) & {b.const(b.addr_mask)}, 1)
regs[0] = (regs[0] & -256) | v
{b.next}
""")


@semantic(Mnemonic.LAHF)
def _lahf(b: Insn) -> Handler:
    return b.compile(f"""
f = fl.materialize(cpu) & 0xD5 | 2
regs[0] = (regs[0] & -65281) | (f << 8)
{b.next}
""")


@semantic(Mnemonic.SAHF)
def _sahf(b: Insn) -> Handler:
    return b.compile(f"""
f = fl.materialize(cpu)
cpu.flags = (f & -256) | ((regs[0] >> 8) & 0xD5) | 2
{b.next}
""")


@semantic(Mnemonic.SALC)
def _salc(b: Insn) -> Handler:
    # Undocumented D6: AL = CF ? 0xFF : 0x00, flags unchanged.
    return b.compile(f"""
regs[0] = (regs[0] & -256) | (0xFF if fl.get_cf(cpu) else 0)
{b.next}
""")


@semantic(Mnemonic.LDS, Mnemonic.LES, Mnemonic.LFS, Mnemonic.LGS, Mnemonic.LSS)
def _lxs(b: Insn) -> Handler:
    if not b.is_mem(1):
        raise NotImplementedError  # register form is #UD
    index = {Mnemonic.LDS: 3, Mnemonic.LES: 0, Mnemonic.LFS: 4, Mnemonic.LGS: 5,
             Mnemonic.LSS: 2}[b.mnemonic]
    cpu = b.cpu
    size = b.size(0)
    seg = b.seg()
    address = b.address()
    write_reg = b.writer(0)
    mask = b.addr_mask
    next_ip = b.next_ip

    def lxs() -> None:
        ea = address()
        offset = cpu.read(seg, ea, size)
        selector = cpu.read(seg, (ea + size) & mask, 2)
        load_segment(cpu, index, selector)
        write_reg(offset)
        cpu.rip = next_ip
    return lxs


def ud_handler() -> Handler:
    def handler() -> None:
        raise CpuFault(UD)
    return handler


_ = Register  # re-exported name used by other groups
