"""x87 FPU instructions (SDM Vol. 1 ch. 8, Vol. 2 instruction pages), on softfloat.

Register file: `cpu.fpu` (pyvmm/engines/interp/fpu.py).  Arithmetic is exact
(pyvmm/engines/interp/softfloat.py): results rounded to FCW.PC and FCW.RC,
exception flags with the masked responses of §8.5, C1 = "rounded up".

Faults (SDM Vol. 3A §2.5, Table 2-2; Vol. 1 §8.7): CR0.EM=1 or CR0.TS=1 ->
#NM for every x87 instruction (FWAIT: only TS=1 with MP=1).  An unmasked
exception sets FSW.ES and B and is reported at the next waiting x87
instruction as #MF when CR0.NE=1 (non-waiting FN* forms and FXSAVE/FXRSTOR
do not check); with NE=0 the external FERR#/IGNNE# path is not wired, so
the instruction proceeds.  Unmasked IE/DE/ZE leave the destination and the
stack unchanged; unmasked OE/UE deliver the bias-adjusted result to a
register and store nothing to memory (§8.5.3-4).  Stack overflow/underflow
set IE, SF and C1 = 1/0 (§8.5.1.1), the masked response being the real
indefinite.

Environment images (FNSTENV/FLDENV, FNSAVE/FRSTOR) use the protected-mode
layouts (Vol. 1 Figures 8-9, 8-10) for both 16- and 32-bit operand size.
FXSAVE/FXRSTOR (Vol. 2A Table 3-53/3-56): 16-byte aligned m512 or #GP(0);
REX.W selects the 64-bit FIP/FDP form.

On the 8086 model an ESC opcode (D8-DF) is a no-op that only consumes its
ModRM bytes (no 8087 attached).  An x87 mnemonic without a handler here is
#UD and counted in stats["unsupported"].
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import iced_x86
from iced_x86 import Code, CpuidFeature, Mnemonic, OpKind, Register

from pyvmm.cpu import fxsave
from pyvmm.cpu.state import CR0_EM, CR0_MP, CR0_NE, CR0_TS
from pyvmm.engines.interp import flags as fl
from pyvmm.engines.interp import softfloat as sf
from pyvmm.engines.interp import x87math
from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.cpu import CS
from pyvmm.engines.interp.faults import GP, MF, NM, UD, CpuFault
from pyvmm.engines.interp.fpu import (
    SW_B,
    SW_C0,
    SW_C1,
    SW_C2,
    SW_C3,
    SW_ES,
    SW_SF,
    Fpu,
)
from pyvmm.engines.interp.semantics import semantic

_FPU_FEATURES = frozenset({CpuidFeature.FPU, CpuidFeature.FPU287, CpuidFeature.FPU287XL_ONLY,
                           CpuidFeature.FPU387, CpuidFeature.FPU387SL_ONLY})
M = Mnemonic
F80 = sf.F80
INDEFINITE = sf.pack(F80, sf.DEFAULT_NAN)
CC_MASK = SW_C0 | SW_C1 | SW_C2 | SW_C3
ONE = 0x3FFF_8000000000000000

# Mnemonics that do not check for a pending unmasked exception (SDM Vol. 1 §8.3.12).
_NO_WAIT = frozenset({M.FNINIT, M.FNCLEX, M.FNSTSW, M.FNSTCW, M.FNSTENV, M.FNSAVE,
                      M.FXSAVE, M.FXSAVE64, M.FXRSTOR, M.FXRSTOR64})
# Control instructions leave FOP/FIP/FDP alone (SDM Vol. 1 §8.1.8-9).
_CONTROL = _NO_WAIT | {M.FLDCW, M.FLDENV, M.FRSTOR, M.WAIT}

_MEM_FORMAT = {
    "M32FP": ("fp", sf.F32, 4), "M64FP": ("fp", sf.F64, 8), "M80FP": ("fp", F80, 10),
    "M16INT": ("int", None, 2), "M32INT": ("int", None, 4), "M64INT": ("int", None, 8),
    "M80BCD": ("bcd", None, 10),
}

_ENVS: dict[int, sf.Env] = {}


def env_of(fcw: int, register_dest: bool = True) -> sf.Env:
    """Rounding environment for FCW: RC, PC (arithmetic results only, SDM Vol. 1
    §8.1.5.2) and the masks; a register destination is bias-adjusted (§8.5.3-4)."""
    key = (fcw & 0xF3F) | (register_dest << 12)
    if register_dest:
        key |= fcw & 0x300
    env = _ENVS.get(key)
    if env is None:
        precision = sf.PRECISION_CONTROL.get((fcw >> 8) & 3, 64) if register_dest else None
        env = sf.Env(rounding=(fcw >> 10) & 3, precision=precision,
                     masks=fcw & 0x3F, bias_adjust=register_dest)
        _ENVS[key] = env
    return env


def store_env(fcw: int) -> sf.Env:
    """Stores round to the destination format (its precision, not PC) with RC; nothing
    is bias-adjusted (SDM Vol. 1 §8.1.5.2: PC affects only the arithmetic results)."""
    return env_of(fcw, register_dest=False)


class Unmasked(Exception):
    """An unmasked IE/DE/ZE: the destination is left unchanged."""


def signal(fpu: Fpu, flags: int, rounded_up: bool = False) -> None:
    """Record exception flags in FSW (§8.5); raise Unmasked for IE/DE/ZE not masked.

    C1 is cleared, or set when the result was rounded up (with PE).  An unmasked
    pre-computation exception (IE, DE, ZE) stops the instruction before it computes a
    result (§8.7: operands unchanged), so OE/UE/PE of that result are not reported.
    """
    if flags & ~fpu.fcw & (sf.IE | sf.DE | sf.ZE):
        flags &= sf.IE | sf.DE | sf.ZE
        rounded_up = False
    sw = fpu.fsw & ~SW_C1
    if rounded_up and flags & sf.PE:
        sw |= SW_C1
    sw |= flags & 0x3F
    unmasked = flags & ~fpu.fcw & 0x3F
    if unmasked:
        sw |= SW_ES | SW_B
    fpu.fsw = sw
    if unmasked & (sf.IE | sf.DE | sf.ZE):
        raise Unmasked


def stack_fault(fpu: Fpu, overflow: bool) -> None:
    """Stack overflow/underflow: IE+SF, C1 = overflow (§8.5.1.1)."""
    fpu.fsw = (fpu.fsw & ~SW_C1) | sf.IE | SW_SF | (SW_C1 if overflow else 0)
    if not fpu.fcw & sf.IE:
        fpu.fsw |= SW_ES | SW_B
        raise Unmasked


def st_read(fpu: Fpu, i: int) -> int:
    if fpu.is_empty(i):
        stack_fault(fpu, overflow=False)
        return INDEFINITE
    return fpu.st(i)


def push(fpu: Fpu, value: int) -> None:
    if not fpu.is_empty(7):
        stack_fault(fpu, overflow=True)
        value = INDEFINITE
    fpu.push(value)


def unpack(value: int) -> sf.Value:
    return sf.unpack(F80, value)


def recompute_es(fpu: Fpu) -> None:
    """ES and B summarise the unmasked exception flags (§8.1.3.1)."""
    if fpu.fsw & ~fpu.fcw & 0x3F:
        fpu.fsw |= SW_ES | SW_B
    else:
        fpu.fsw &= ~(SW_ES | SW_B)


# -- builder plumbing -----------------------------------------------------------

Body = Callable[[], None]


def _sti(b: Insn, i: int) -> int:
    return b.ins.op_register(i) - Register.ST0


def _regs(b: Insn) -> list[int]:
    return [_sti(b, i) for i in range(b.ins.op_count) if b.ins.op_kind(i) == OpKind.REGISTER
            and Register.ST0 <= b.ins.op_register(i) <= Register.ST7]


def _mem_kind(b: Insn) -> tuple[str, sf.Format | None, int] | None:
    code_name = _CODE_NAMES.get(b.code, "")
    for suffix, kind in _MEM_FORMAT.items():
        if code_name.endswith(suffix):
            return kind
    return None


_CODE_NAMES = {v: k for k, v in Code.__dict__.items() if isinstance(v, int) and k.isupper()}


class Mem:
    """Memory operand access for multi-part x87 operands."""

    def __init__(self, b: Insn) -> None:
        self.cpu = b.cpu
        self.seg = b.seg()
        self.address = b.address()
        self.mask = b.addr_mask

    def read(self, off: int, size: int) -> int:
        value = 0
        pos = 0
        cpu, seg, mask = self.cpu, self.seg, self.mask
        while size:
            step = 8 if size >= 8 else 4 if size >= 4 else 2 if size >= 2 else 1
            value |= cpu.read(seg, (off + pos) & mask, step) << (8 * pos)
            pos += step
            size -= step
        return value

    def write(self, off: int, size: int, value: int) -> None:
        cpu, seg, mask = self.cpu, self.seg, self.mask
        # Probe the last byte first, so a fault leaves memory untouched.
        cpu.read_rmw(seg, (off + size - 1) & mask, 1)
        pos = 0
        while size:
            step = 8 if size >= 8 else 4 if size >= 4 else 2 if size >= 2 else 1
            cpu.write(seg, (off + pos) & mask, step, (value >> (8 * pos)) & ((1 << 8 * step) - 1))
            pos += step
            size -= step


def _wrap(b: Insn, body: Callable[[Fpu, int], None], memory: bool) -> Handler:
    """The handler: fault checks, FOP/FIP/FDP, the body, and rip."""
    cpu = b.cpu
    fpu_holder = cpu
    mnemonic = b.mnemonic
    wait_check = mnemonic not in _NO_WAIT
    is_wait = mnemonic == M.WAIT
    control = mnemonic in _CONTROL
    raw = b.raw
    opcode_index = next((i for i, byte in enumerate(raw) if 0xD8 <= byte <= 0xDF), None)
    fop = 0
    if opcode_index is not None and opcode_index + 1 < len(raw):
        fop = ((raw[opcode_index] & 7) << 8) | raw[opcode_index + 1]
    ip = b.ip
    next_ip = b.next_ip
    address = b.address() if memory else None
    data_seg = b.seg() if memory else 0
    seg_sel = cpu.seg_sel

    def handler() -> None:
        cr0 = cpu.cr0
        if is_wait:
            if cr0 & (CR0_TS | CR0_MP) == (CR0_TS | CR0_MP):
                raise CpuFault(NM)
        elif cr0 & (CR0_EM | CR0_TS):
            raise CpuFault(NM)
        fpu = fpu_holder.fpu
        if wait_check and fpu.fsw & SW_ES and cr0 & CR0_NE:
            raise CpuFault(MF)
        off = address() if address is not None else 0
        try:
            body(fpu, off)
        except Unmasked:
            pass
        if not control:
            # FCS/FDS: the selectors of the instruction and its operand (SDM Vol. 1
            # §8.1.8); this CPU's CPUID has no leaf 7, so they are not deprecated.
            fpu.fop = fop
            fpu.fip = ip
            fpu.fcs = seg_sel[CS]
            if address is not None:
                fpu.fdp = off
                fpu.fds = seg_sel[data_seg]
        cpu.rip = next_ip
    return handler


_BUILDERS: dict[int, Callable[[Insn], Handler]] = {}


def x87(*mnemonics: int) -> Callable:
    def decorator(fn: Callable[[Insn], Handler]) -> Callable[[Insn], Handler]:
        for m in mnemonics:
            _BUILDERS[m] = fn
        return fn
    return decorator


# -- loads and stores -------------------------------------------------------------

def _load_value(fpu: Fpu, kind: str, fmt: sf.Format | None, size: int, raw: int) -> int:
    """A memory operand converted to extended (exact), flags per FLD/FILD."""
    if kind == "int":
        n = raw - (1 << (8 * size)) if raw >> (8 * size - 1) else raw
        return sf.from_int(sf.Env(), F80, n).bits
    if kind == "bcd":
        digits = 0
        for i in range(17, -1, -1):
            digits = digits * 10 + ((raw >> (4 * i)) & 0xF)
        n = -digits if raw >> 79 else digits
        r = sf.from_int(sf.Env(), F80, n).bits
        return r | (1 << 79) if raw >> 79 and n == 0 else r
    if fmt is F80:
        return raw
    v = sf.unpack(fmt, raw)
    r = sf.convert(sf.Env(masks=fpu.fcw & 0x3F), F80, v)
    signal(fpu, r.flags)
    return r.bits


@x87(M.FLD, M.FILD, M.FBLD)
def _fld(b: Insn) -> Handler:
    regs = _regs(b)
    if regs:
        i = regs[0]

        def body(fpu: Fpu, off: int) -> None:
            if fpu.is_empty(i):
                # Underflow (C1 = 0) is what is reported, also when the push would
                # overflow as well (the SDM does not order them; the AMD host's choice).
                stack_fault(fpu, overflow=False)
                fpu.push(INDEFINITE)
                return
            fpu.fsw &= ~SW_C1  # C1 = 1 only on the stack overflow push() reports
            push(fpu, fpu.st(i))
        return _wrap(b, body, memory=False)
    kind, fmt, size = _mem_kind(b)
    mem = Mem(b)

    def body(fpu: Fpu, off: int) -> None:
        raw = mem.read(off, size)
        if not fpu.is_empty(7):
            stack_fault(fpu, overflow=True)
            fpu.push(INDEFINITE)
            return
        fpu.fsw &= ~SW_C1
        fpu.push(_load_value(fpu, kind, fmt, size, raw))
    return _wrap(b, body, memory=True)


def _to_bcd(fpu: Fpu, value: int) -> int | None:
    n_bits, flags, up = sf.to_int(store_env(fpu.fcw), unpack(value), 128)
    n = n_bits - (1 << 128) if n_bits >> 127 else n_bits
    flags &= ~sf.DE  # FBSTP lists no #D (SDM Vol. 2A "FBSTP")
    if flags & sf.IE or abs(n) >= 10 ** 18:
        signal(fpu, (flags & ~sf.PE) | sf.IE)
        return 0xFFFF_C000000000000000  # packed BCD indefinite (SDM Vol. 1 Table 4-11)
    signal(fpu, flags, up)
    digits = abs(n)
    out = 0
    for i in range(18):
        out |= (digits % 10) << (4 * i)
        digits //= 10
    return out | ((1 << 79) if n < 0 or (n == 0 and value >> 79) else 0)


@x87(M.FST, M.FSTP, M.FIST, M.FISTP, M.FISTTP, M.FBSTP)
def _fst(b: Insn) -> Handler:
    pop = b.mnemonic in (M.FSTP, M.FISTP, M.FISTTP, M.FBSTP)
    regs = _regs(b)
    if regs:
        i = regs[0]

        def body(fpu: Fpu, off: int) -> None:
            value = st_read(fpu, 0)
            fpu.fsw &= ~SW_C1
            fpu.set_st(i, value)
            if pop:
                fpu.pop()
        return _wrap(b, body, memory=False)
    kind, fmt, size = _mem_kind(b)
    mem = Mem(b)
    truncate = b.mnemonic == M.FISTTP
    bits = 8 * size

    def body(fpu: Fpu, off: int) -> None:
        if fpu.is_empty(0):
            stack_fault(fpu, overflow=False)
            out = {"fp": sf.pack(fmt, sf.DEFAULT_NAN) if fmt else 0, "int": 1 << (bits - 1),
                   "bcd": 0xFFFF_C000000000000000}[kind]
        elif kind == "int":
            out, flags, up = sf.to_int(store_env(fpu.fcw), unpack(fpu.st(0)), bits, truncate)
            signal(fpu, flags & ~sf.DE, up)
        elif kind == "bcd":
            out = _to_bcd(fpu, fpu.st(0))
        elif fmt is F80:
            out = fpu.st(0)
            fpu.fsw &= ~SW_C1
        else:
            r = sf.convert(store_env(fpu.fcw), fmt, unpack(fpu.st(0)))
            flags = r.flags & ~sf.DE  # FST lists no #D (SDM Vol. 2A "FST/FSTP")
            if flags & ~fpu.fcw & (sf.OE | sf.UE):
                # Unmasked overflow/underflow: nothing stored (§8.5.3-4), and the host
                # CPU reports no PE with it.
                signal(fpu, flags & ~sf.PE)
                return
            signal(fpu, flags, r.rounded_up)
            out = r.bits
        mem.write(off, size, out)
        if pop:
            fpu.pop()
    return _wrap(b, body, memory=True)


# -- constants ---------------------------------------------------------------------

def _ln(x_num: int, x_den: int, bits: int) -> int:
    """ln(x) * 2**bits (x > 0 rational), by atanh series: ln x = 2 atanh((x-1)/(x+1))."""
    from fractions import Fraction
    y = Fraction(x_num - x_den, x_num + x_den)
    term, total, k = y, Fraction(0), 1
    eps = Fraction(1, 1 << (bits + 8))
    while abs(term) > eps:
        total += term / k
        term *= y * y
        k += 2
    return int(2 * total * (1 << bits))


_CBITS = 160
_LN2 = _ln(2, 1, _CBITS)
_LN10 = _ln(10, 1, _CBITS)
# Constants as (numerator, exponent): value ~= num * 2**-_CBITS, exact to ~150 bits.
_CONSTANTS = {
    M.FLDPI: x87math.pi_fixed(_CBITS),
    M.FLDL2E: (1 << (2 * _CBITS)) // _LN2,
    M.FLDL2T: (_LN10 << _CBITS) // _LN2,
    M.FLDLG2: (_LN2 << _CBITS) // _LN10,
    M.FLDLN2: _LN2,
}


@x87(M.FLDZ, M.FLD1, M.FLDPI, M.FLDL2E, M.FLDL2T, M.FLDLG2, M.FLDLN2)
def _fldconst(b: Insn) -> Handler:
    mnemonic = b.mnemonic

    def value(fcw: int) -> int:
        if mnemonic == M.FLDZ:
            return 0
        if mnemonic == M.FLD1:
            return ONE
        env = sf.Env(rounding=(fcw >> 10) & 3)
        return sf.round_pack(env, F80, 0, _CONSTANTS[mnemonic], -_CBITS, sticky=True).bits

    def body(fpu: Fpu, off: int) -> None:
        fpu.fsw &= ~SW_C1
        push(fpu, value(fpu.fcw))
    return _wrap(b, body, memory=False)


# -- arithmetic ---------------------------------------------------------------------

_ARITH = {
    M.FADD: "add", M.FADDP: "add", M.FIADD: "add",
    M.FSUB: "sub", M.FSUBP: "sub", M.FISUB: "sub",
    M.FSUBR: "subr", M.FSUBRP: "subr", M.FISUBR: "subr",
    M.FMUL: "mul", M.FMULP: "mul", M.FIMUL: "mul",
    M.FDIV: "div", M.FDIVP: "div", M.FIDIV: "div",
    M.FDIVR: "divr", M.FDIVRP: "divr", M.FIDIVR: "divr",
}


def arith(fpu: Fpu, op: str, a: int, b: int, operand_flags: int = 0) -> int:
    """ST op operand, rounded per FCW.  `operand_flags`: DE of a denormal m32/m64 operand.

    Only the highest-priority exception of an operand check is reported (SDM Vol. 1
    §4.9.2): an invalid operation, a QNaN operand or a divide-by-zero hides #D.
    """
    env = env_of(fpu.fcw)
    va, vb = unpack(a), unpack(b)
    if op == "add":
        r = sf.add(env, F80, va, vb)
    elif op == "sub":
        r = sf.add(env, F80, va, vb, subtract=True)
    elif op == "subr":
        r = sf.add(env, F80, vb, va, subtract=True)
    elif op == "mul":
        r = sf.mul(env, F80, va, vb)
    elif op == "div":
        r = sf.div(env, F80, va, vb)
    else:
        r = sf.div(env, F80, vb, va)
    flags = r.flags | operand_flags
    if flags & (sf.IE | sf.ZE) or va.cls in _NANS or vb.cls in _NANS:
        flags &= ~sf.DE
    signal(fpu, flags, r.rounded_up)
    return r.bits


_NANS = (sf.Cls.QNAN, sf.Cls.SNAN)


@x87(*_ARITH)
def _arith(b: Insn) -> Handler:
    op = _ARITH[b.mnemonic]
    pop = b.mnemonic in (M.FADDP, M.FSUBP, M.FSUBRP, M.FMULP, M.FDIVP, M.FDIVRP)
    regs = _regs(b)
    if len(regs) == 2:
        dest, src = regs

        def body(fpu: Fpu, off: int) -> None:
            if fpu.is_empty(dest) or fpu.is_empty(src):
                stack_fault(fpu, overflow=False)
                fpu.set_st(dest, INDEFINITE)
            else:
                fpu.set_st(dest, arith(fpu, op, fpu.st(dest), fpu.st(src)))
            if pop:
                fpu.pop()
        return _wrap(b, body, memory=False)
    kind, fmt, size = _mem_kind(b)
    mem = Mem(b)

    def body(fpu: Fpu, off: int) -> None:
        raw = mem.read(off, size)
        if fpu.is_empty(0):
            stack_fault(fpu, overflow=False)
            fpu.set_st(0, INDEFINITE)
            return
        if kind == "int":
            n = raw - (1 << (8 * size)) if raw >> (8 * size - 1) else raw
            operand = sf.from_int(sf.Env(), F80, n).bits
            fpu.set_st(0, arith(fpu, op, fpu.st(0), operand))
            return
        # Memory operand in its own format: SNaN/denormal seen before widening.
        v = sf.unpack(fmt, raw)
        if v.cls == sf.Cls.SNAN:
            operand = raw_snan_as_ext(v)
        else:
            operand = sf.pack(F80, v) if not v.finite_nonzero else \
                sf.round_pack(sf.Env(), F80, v.sign, v.sig, v.exp).bits
        # A denormal m32/m64 operand is normal once widened but still a denormal
        # operand (#D, SDM Vol. 1 §8.5.2).
        de = sf.DE if v.cls == sf.Cls.DENORMAL else 0
        fpu.set_st(0, arith(fpu, op, fpu.st(0), operand, de))
    return _wrap(b, body, memory=True)


def raw_snan_as_ext(v: sf.Value) -> int:
    """A m32/m64 SNaN widened without quieting, so the operation signals IE."""
    return (v.sign << 79) | (0x7FFF << 64) | (1 << 63) | v.sig


@x87(M.FCHS, M.FABS)
def _fsign(b: Insn) -> Handler:
    chs = b.mnemonic == M.FCHS

    def body(fpu: Fpu, off: int) -> None:
        if fpu.is_empty(0):  # stack underflow: the masked response is the indefinite
            stack_fault(fpu, overflow=False)
            fpu.set_st(0, INDEFINITE)
            return
        fpu.fsw &= ~SW_C1
        value = fpu.st(0)
        fpu.set_st(0, value ^ (1 << 79) if chs else value & ~(1 << 79))
    return _wrap(b, body, memory=False)


@x87(M.FSQRT, M.FRNDINT)
def _unary(b: Insn) -> Handler:
    sqrt = b.mnemonic == M.FSQRT

    def body(fpu: Fpu, off: int) -> None:
        if fpu.is_empty(0):
            stack_fault(fpu, overflow=False)
            fpu.set_st(0, INDEFINITE)
            return
        v = unpack(fpu.st(0))
        if sqrt:
            r = sf.sqrt(env_of(fpu.fcw), F80, v)
        else:
            r = sf.round_to_integral(env_of(fpu.fcw | 0x300), F80, v)
        signal(fpu, r.flags, r.rounded_up)
        fpu.set_st(0, r.bits)
    return _wrap(b, body, memory=False)


# -- comparisons ----------------------------------------------------------------------

_CC = {sf.Order.GREATER: 0, sf.Order.LESS: SW_C0, sf.Order.EQUAL: SW_C3,
       sf.Order.UNORDERED: SW_C3 | SW_C2 | SW_C0}
_EFL = {sf.Order.GREATER: 0, sf.Order.LESS: fl.CF, sf.Order.EQUAL: fl.ZF,
        sf.Order.UNORDERED: fl.ZF | fl.PF | fl.CF}
_COMPARE = {  # mnemonic: (quiet, pops, sets EFLAGS)
    M.FCOM: (False, 0, False), M.FCOMP: (False, 1, False), M.FCOMPP: (False, 2, False),
    M.FUCOM: (True, 0, False), M.FUCOMP: (True, 1, False), M.FUCOMPP: (True, 2, False),
    M.FICOM: (False, 0, False), M.FICOMP: (False, 1, False),
    M.FCOMI: (False, 0, True), M.FCOMIP: (False, 1, True),
    M.FUCOMI: (True, 0, True), M.FUCOMIP: (True, 1, True),
    M.FTST: (False, 0, False),
}


@x87(*_COMPARE)
def _fcom(b: Insn) -> Handler:
    quiet, pops, eflags = _COMPARE[b.mnemonic]
    cpu = b.cpu
    regs = _regs(b)
    memory = b.ins.op_count > 0 and b.ins.op_kind(b.ins.op_count - 1) == OpKind.MEMORY
    ftst = b.mnemonic == M.FTST
    src_reg = regs[1] if len(regs) == 2 else 1
    kind = _mem_kind(b) if memory else None
    mem = Mem(b) if memory else None

    def body(fpu: Fpu, off: int) -> None:
        if memory:
            k, fmt, size = kind
            raw = mem.read(off, size)
            if k == "int":
                n = raw - (1 << (8 * size)) if raw >> (8 * size - 1) else raw
                other = sf.unpack(F80, sf.from_int(sf.Env(), F80, n).bits)
            else:
                other = sf.unpack(fmt, raw)
        elif ftst:
            other = sf.Value(sf.Cls.ZERO, 0)
        else:
            other = None
        if fpu.is_empty(0) or (other is None and fpu.is_empty(src_reg)):
            stack_fault(fpu, overflow=False)
            order, flags = sf.Order.UNORDERED, 0
        else:
            if other is None:
                other = unpack(fpu.st(src_reg))
            order, flags = sf.compare(sf.Env(), unpack(fpu.st(0)), other, signalling=not quiet)
            signal(fpu, flags)
        if eflags:
            cpu.update_flags(fl.ZF | fl.PF | fl.CF | fl.OF | fl.SF | fl.AF, _EFL[order])
            fpu.fsw &= ~SW_C1
        else:
            fpu.fsw = (fpu.fsw & ~CC_MASK) | _CC[order]
        for _ in range(pops):
            fpu.pop()
    return _wrap(b, body, memory=memory)


_FXAM = {sf.Cls.UNSUPPORTED: 0, sf.Cls.QNAN: SW_C0, sf.Cls.SNAN: SW_C0, sf.Cls.NORMAL: SW_C2,
         sf.Cls.INF: SW_C2 | SW_C0, sf.Cls.ZERO: SW_C3, sf.Cls.DENORMAL: SW_C3 | SW_C2}


@x87(M.FXAM)
def _fxam(b: Insn) -> Handler:
    def body(fpu: Fpu, off: int) -> None:
        value = fpu.st(0)
        sign = SW_C1 if value >> 79 & 1 else 0
        cc = SW_C3 | SW_C0 if fpu.is_empty(0) else _FXAM[unpack(value).cls]
        fpu.fsw = (fpu.fsw & ~CC_MASK) | cc | sign
    return _wrap(b, body, memory=False)


# -- stack and control ------------------------------------------------------------------

@x87(M.FXCH)
def _fxch(b: Insn) -> Handler:
    regs = _regs(b)  # iced: FXCH ST(0), ST(i); D9 C8+i, FXCH ST(0) included
    i = regs[-1] if regs else 1

    def body(fpu: Fpu, off: int) -> None:
        if fpu.is_empty(0) or fpu.is_empty(i):
            stack_fault(fpu, overflow=False)
            a = fpu.st(0) if not fpu.is_empty(0) else INDEFINITE
            c = fpu.st(i) if not fpu.is_empty(i) else INDEFINITE
        else:
            a, c = fpu.st(0), fpu.st(i)
        fpu.fsw &= ~SW_C1
        fpu.set_st(0, c)
        fpu.set_st(i, a)
    return _wrap(b, body, memory=False)


_FCMOV = {M.FCMOVB: (fl.CF, True), M.FCMOVE: (fl.ZF, True), M.FCMOVBE: (fl.CF | fl.ZF, True),
          M.FCMOVU: (fl.PF, True), M.FCMOVNB: (fl.CF, False), M.FCMOVNE: (fl.ZF, False),
          M.FCMOVNBE: (fl.CF | fl.ZF, False), M.FCMOVNU: (fl.PF, False)}


@x87(*_FCMOV)
def _fcmov(b: Insn) -> Handler:
    mask, when_set = _FCMOV[b.mnemonic]
    i = _regs(b)[-1]
    cpu = b.cpu

    def body(fpu: Fpu, off: int) -> None:
        if fpu.is_empty(0) or fpu.is_empty(i):
            stack_fault(fpu, overflow=False)
            fpu.set_st(0, INDEFINITE)
            return
        # C1 changes only on stack underflow (SDM Vol. 2A "FCMOVcc": flags affected).
        if bool(cpu.get_flags() & mask) == when_set:
            fpu.set_st(0, fpu.st(i))
    return _wrap(b, body, memory=False)


@x87(M.FFREE, M.FFREEP, M.FINCSTP, M.FDECSTP, M.FNOP, M.FNINIT, M.FNCLEX, M.WAIT)
def _fctl(b: Insn) -> Handler:
    m = b.mnemonic
    regs = _regs(b)

    def body(fpu: Fpu, off: int) -> None:
        if m in (M.FFREE, M.FFREEP):
            # SDM Vol. 2A "FFREE": C0-C3 undefined; this CPU clears C1 and keeps C0, C2,
            # C3, as the AMD host measured by the difftest x87 family does.
            fpu.fsw &= ~SW_C1
            fpu.free(regs[0])
            if m == M.FFREEP:
                fpu.pop()
        elif m == M.FINCSTP:
            fpu.top = (fpu.top + 1) & 7
            fpu.fsw &= ~SW_C1
        elif m == M.FDECSTP:
            fpu.top = (fpu.top - 1) & 7
            fpu.fsw &= ~SW_C1
        elif m == M.FNINIT:
            fpu.finit()
        elif m == M.FNCLEX:
            fpu.fsw &= ~(0x3F | SW_SF | SW_ES | SW_B)
    return _wrap(b, body, memory=False)


@x87(M.FNSTSW, M.FNSTCW, M.FLDCW)
def _fsw(b: Insn) -> Handler:
    m = b.mnemonic
    cpu = b.cpu
    to_ax = m == M.FNSTSW and b.ins.op_kind(0) == OpKind.REGISTER
    mem = None if to_ax else Mem(b)

    def body(fpu: Fpu, off: int) -> None:
        if to_ax:
            cpu.regs[0] = (cpu.regs[0] & ~0xFFFF) | fpu.status
        elif m == M.FNSTSW:
            mem.write(off, 2, fpu.status)
        elif m == M.FNSTCW:
            mem.write(off, 2, fpu.fcw)
        else:
            fpu.fcw = mem.read(off, 2) | 0x40  # bit 6 reads as 1 (§8.1.5)
            recompute_es(fpu)
    return _wrap(b, body, memory=not to_ax)


# -- environment, FSAVE, FXSAVE ---------------------------------------------------------------

def _env_fields(fpu: Fpu) -> list[int]:
    # Protected-mode layout (SDM Vol. 1 Figure 8-9): FCW FSW FTW FIP (FOP<<16|FCS) FDP FDS.
    return [fpu.fcw, fpu.status, fpu.tag_word(), fpu.fip & 0xFFFFFFFF,
            (fpu.fop << 16) | fpu.fcs, fpu.fdp & 0xFFFFFFFF, fpu.fds]


def _store_env(fpu: Fpu, mem: Mem, off: int, wide: bool) -> int:
    fields = _env_fields(fpu)
    unit = 4 if wide else 2
    for n, value in enumerate(fields):
        if not wide and n == 4:
            value = fpu.fcs  # 16-bit format: FCS only
        mask = (1 << (8 * unit)) - 1
        if wide and n in (0, 1, 2, 6):
            value |= 0xFFFF0000  # reserved upper halves store as 1s
        mem.write(off + unit * n, unit, value & mask)
    return off + 7 * unit


def _load_env(fpu: Fpu, mem: Mem, off: int, wide: bool) -> int:
    unit = 4 if wide else 2
    fields = [mem.read(off + unit * n, unit) for n in range(7)]
    fpu.fcw = fields[0] & 0xFFFF | 0x40
    fpu.status = fields[1] & 0xFFFF
    fpu.set_tag_word(fields[2] & 0xFFFF)
    fpu.fip = fields[3]
    if wide:
        fpu.fop = (fields[4] >> 16) & 0x7FF
        fpu.fcs = fields[4] & 0xFFFF
    fpu.fdp = fields[5]
    fpu.fds = fields[6] & 0xFFFF
    recompute_es(fpu)
    return off + 7 * unit


@x87(M.FNSTENV, M.FLDENV, M.FNSAVE, M.FRSTOR)
def _fenv(b: Insn) -> Handler:
    m = b.mnemonic
    wide = b.ins.memory_size in (iced_x86.MemorySize.FPU_ENV28, iced_x86.MemorySize.FPU_STATE108)
    mem = Mem(b)

    def body(fpu: Fpu, off: int) -> None:
        if m in (M.FNSTENV, M.FNSAVE):
            regs_at = _store_env(fpu, mem, off, wide)
            if m == M.FNSAVE:
                for i in range(8):
                    mem.write(regs_at + 10 * i, 10, fpu.st(i))
                fpu.finit()
            else:
                fpu.fcw |= 0x3F  # FNSTENV masks all exceptions afterwards
        else:
            regs_at = _load_env(fpu, mem, off, wide)
            if m == M.FRSTOR:
                for i in range(8):
                    fpu.regs[(fpu.top + i) & 7] = mem.read(regs_at + 10 * i, 10)
    return _wrap(b, body, memory=True)


@x87(M.FXSAVE, M.FXSAVE64, M.FXRSTOR, M.FXRSTOR64)
def _fxsave(b: Insn) -> Handler:
    m = b.mnemonic
    cpu = b.cpu
    wide = m in (M.FXSAVE64, M.FXRSTOR64)
    seg = b.seg()
    mem = Mem(b)
    save = m in (M.FXSAVE, M.FXSAVE64)

    def body(fpu: Fpu, off: int) -> None:
        if (cpu.seg_base[seg] + off) & 15:
            raise CpuFault(GP, 0)
        if save:
            image = bytearray(cpu.fpu_image())
            if not wide:
                fxsave.HEAD.pack_into(image, 0, *fxsave.HEAD.unpack_from(image, 0))
                image[8:24] = ((fpu.fip & 0xFFFFFFFF) | (fpu.fcs << 32)).to_bytes(8, "little") \
                    + ((fpu.fdp & 0xFFFFFFFF) | (fpu.fds << 32)).to_bytes(8, "little")
            base_image = bytes(image)
            # Reserved bytes 464-511 are the software's: FXSAVE leaves them.
            for pos in range(0, 464, 8):
                mem.write(off + pos, 8, int.from_bytes(base_image[pos:pos + 8], "little"))
            return
        data = b"".join(mem.read(off + pos, 8).to_bytes(8, "little") for pos in range(0, 512, 8))
        mxcsr = int.from_bytes(data[24:28], "little")
        if mxcsr & ~fxsave.MXCSR_MASK:
            raise CpuFault(GP, 0)
        image = bytearray(data)
        if not wide:
            image[8:24] = (int.from_bytes(data[8:12], "little")).to_bytes(8, "little") \
                + (int.from_bytes(data[16:20], "little")).to_bytes(8, "little")
        cpu.load_fpu_image(bytes(image))
        if not wide:
            fpu2 = cpu.fpu
            fpu2.fcs = int.from_bytes(data[12:14], "little")
            fpu2.fds = int.from_bytes(data[20:22], "little")
        recompute_es(cpu.fpu)

    handler = _wrap(b, body, memory=True)

    def checked() -> None:
        if cpu.cr0 & (CR0_EM | CR0_TS):
            raise CpuFault(NM)
        handler()
    return checked


# -- transcendental, remainder, scale, extract (SDM Vol. 2A instruction pages) ----------

_TRIG_LIMIT = 63  # |x| >= 2**63: out of range, C2 = 1 and ST(0) unchanged (§8.3.10)
_NAN_CLS = (sf.Cls.QNAN, sf.Cls.SNAN, sf.Cls.UNSUPPORTED)
_FINITE = (sf.Cls.NORMAL, sf.Cls.DENORMAL)


def _nan_of(fpu: Fpu, a: sf.Value, c: sf.Value | None = None) -> int:
    """The x87 NaN response for NaN/unsupported operands (IE on SNaN/unsupported)."""
    flags = 0
    for v in (a, c):
        if v is not None and v.cls in (sf.Cls.SNAN, sf.Cls.UNSUPPORTED):
            flags = sf.IE
    r = sf.add(sf.Env(masks=0x3F), F80, a, c if c is not None else a)
    signal(fpu, flags)
    return r.bits


# FCW.PC affects only FADD...FDIVR and FSQRT (SDM Vol. 1 §8.1.5.2): these results are
# rounded to 64 bits by FCW.RC.
_FULL_PC = 0x300


def _round_real(fpu: Fpu, value: Fraction, flags: int = 0) -> int:
    """An approximation of an irrational result, rounded by FCW.RC (PE always)."""
    if value == 0:
        signal(fpu, flags)
        return 0
    sign, sig, exp = x87math.round_parts(value)
    r = sf.round_pack(env_of(fpu.fcw | _FULL_PC), F80, sign, sig, exp, sticky=True)
    signal(fpu, flags | r.flags, r.rounded_up)
    return r.bits


def _round_exact(fpu: Fpu, value: Fraction, flags: int = 0, sign_of_zero: int = 0) -> int:
    """A dyadic rational result rounded by FCW.RC (PE only if it does not fit)."""
    if value == 0:
        signal(fpu, flags)
        return sf.zero(F80, sign_of_zero)
    den = value.denominator
    exp = -(den.bit_length() - 1)
    sign = 1 if value < 0 else 0
    r = sf.round_pack(env_of(fpu.fcw | _FULL_PC), F80, sign, abs(value.numerator), exp)
    signal(fpu, flags | r.flags, r.rounded_up)
    return r.bits


def _operand(fpu: Fpu, i: int) -> tuple[sf.Value, int]:
    v = unpack(fpu.st(i))
    return v, sf.DE if v.cls == sf.Cls.DENORMAL else 0


def _set_c2(fpu: Fpu, on: bool) -> None:
    fpu.fsw = (fpu.fsw & ~SW_C2) | (SW_C2 if on else 0)


@x87(M.FSIN, M.FCOS, M.FSINCOS, M.FPTAN)
def _trig(b: Insn) -> Handler:
    mnemonic = b.mnemonic
    pushes = mnemonic in (M.FSINCOS, M.FPTAN)

    def body(fpu: Fpu, off: int) -> None:
        if fpu.is_empty(0) or (pushes and not fpu.is_empty(7)):
            overflow = not fpu.is_empty(0)
            stack_fault(fpu, overflow=overflow)
            fpu.set_st(0, INDEFINITE)
            if pushes:
                fpu.push(INDEFINITE)
            return
        v, de = _operand(fpu, 0)
        if v.cls in _NAN_CLS or v.cls == sf.Cls.INF:
            if v.cls == sf.Cls.INF:
                signal(fpu, sf.IE)
                result = INDEFINITE
            else:
                result = _nan_of(fpu, v)
            _set_c2(fpu, False)
            fpu.set_st(0, result)
            if pushes:
                fpu.push(result)
            return
        if v.cls != sf.Cls.ZERO and v.sig.bit_length() + v.exp > _TRIG_LIMIT:
            fpu.fsw &= ~SW_C1
            _set_c2(fpu, True)
            return
        if v.cls == sf.Cls.ZERO:
            zero = fpu.st(0)
            signal(fpu, 0)
            outs = {M.FSIN: (zero,), M.FCOS: (ONE,), M.FSINCOS: (zero, ONE),
                    M.FPTAN: (zero, ONE)}[mnemonic]
        else:
            x = sf.to_fraction(v)
            s, c = x87math.sin_cos_f(x)
            if mnemonic == M.FSIN:
                outs = (_round_real(fpu, s, de),)
            elif mnemonic == M.FCOS:
                outs = (_round_real(fpu, c, de),)
            elif mnemonic == M.FSINCOS:
                outs = (_round_real(fpu, s, de), _round_real(fpu, c, de))
            else:
                outs = (_round_real(fpu, s / c, de), ONE)
        _set_c2(fpu, False)
        fpu.set_st(0, outs[0])
        if pushes:
            fpu.push(outs[1])
    return _wrap(b, body, memory=False)


@x87(M.F2XM1)
def _f2xm1(b: Insn) -> Handler:
    def body(fpu: Fpu, off: int) -> None:
        if fpu.is_empty(0):
            stack_fault(fpu, overflow=False)
            fpu.set_st(0, INDEFINITE)
            return
        v, de = _operand(fpu, 0)
        if v.cls in _NAN_CLS:
            fpu.set_st(0, _nan_of(fpu, v))
        elif v.cls == sf.Cls.INF:  # 2**+inf - 1 = +inf, 2**-inf - 1 = -1 (exact)
            signal(fpu, 0)
            fpu.set_st(0, fpu.st(0) if not v.sign else ONE | 1 << 79)
        elif v.cls == sf.Cls.ZERO:
            signal(fpu, 0)
        else:
            x = sf.to_fraction(v)
            if abs(x) > 1:
                # Outside -1..+1 the SDM leaves the result undefined; the host CPU keeps
                # ST(0) and reports PE (measured), and so does this one.
                signal(fpu, sf.PE | de)
            else:  # PE even for +-1 (measured: the host's 2**1 - 1 = 1.0 reports PE)
                fpu.set_st(0, _round_real(fpu, x87math.exp2m1(x), de))
    return _wrap(b, body, memory=False)


def _mul_special(fpu: Fpu, y: sf.Value, log: sf.Value, de: int) -> int:
    """ST(1) * log for non-finite or zero factors, by the x87 multiplication rules;
    `de`: a denormal operand (reported, as the host does, unless the result is invalid)."""
    r = sf.mul(sf.Env(masks=0x3F), F80, y, log)
    if r.flags & sf.IE:
        signal(fpu, sf.IE)
        return INDEFINITE
    signal(fpu, (r.flags & ~sf.DE) | de)
    return r.bits


@x87(M.FYL2X, M.FYL2XP1)
def _fyl2x(b: Insn) -> Handler:
    plus1 = b.mnemonic == M.FYL2XP1

    def body(fpu: Fpu, off: int) -> None:
        if fpu.is_empty(0) or fpu.is_empty(1):
            stack_fault(fpu, overflow=False)
            fpu.set_st(1, INDEFINITE)
            fpu.pop()
            return
        x, dx = _operand(fpu, 0)
        y, dy = _operand(fpu, 1)
        de = dx | dy
        if x.cls in _NAN_CLS or y.cls in _NAN_CLS:
            fpu.set_st(1, _nan_of(fpu, x, y))
            fpu.pop()
            return
        xv = sf.to_fraction(x) if x.cls in _FINITE else None
        arg = (xv + 1 if xv is not None else None) if plus1 else xv
        invalid = x.sign and x.cls != sf.Cls.ZERO and (not plus1 or (arg is not None and arg < 0)
                                                    or x.cls == sf.Cls.INF)
        if invalid:
            signal(fpu, sf.IE)
            fpu.set_st(1, INDEFINITE)
        elif x.cls == sf.Cls.ZERO and not plus1:  # log2(0) = -inf
            if y.cls == sf.Cls.ZERO:
                signal(fpu, sf.IE)
                fpu.set_st(1, INDEFINITE)
            else:
                result = sf.infinity(F80, 1 ^ y.sign)
                # #Z hides #D (SDM Vol. 1 §4.9.2 priorities; measured on the host).
                signal(fpu, 0 if y.cls == sf.Cls.INF else sf.ZE)
                fpu.set_st(1, result)
        elif x.cls == sf.Cls.ZERO:  # log2(1 + 0) = +-0
            fpu.set_st(1, _mul_special(fpu, y, x, de))
        elif x.cls == sf.Cls.INF:
            fpu.set_st(1, _mul_special(fpu, y, sf.Value(sf.Cls.INF, 0), de))
        elif arg == 1:  # log2(1) = +0
            fpu.set_st(1, _mul_special(fpu, y, sf.Value(sf.Cls.ZERO, 0), de))
        elif y.cls in (sf.Cls.ZERO, sf.Cls.INF):
            sign = 1 if arg < 1 else 0
            fpu.set_st(1, _mul_special(fpu, y, sf.Value(sf.Cls.NORMAL, sign, 1, 0), de))
        else:
            yv = sf.to_fraction(y)
            log = x87math.log2p1(xv) if plus1 else x87math.log2(xv)
            if log.denominator == 1 and not plus1:  # a power of two: exact
                fpu.set_st(1, _round_exact(fpu, yv * log, de))
            else:
                fpu.set_st(1, _round_real(fpu, yv * log, de))
        fpu.pop()
    return _wrap(b, body, memory=False)


@x87(M.FPATAN)
def _fpatan(b: Insn) -> Handler:
    def body(fpu: Fpu, off: int) -> None:
        if fpu.is_empty(0) or fpu.is_empty(1):
            stack_fault(fpu, overflow=False)
            fpu.set_st(1, INDEFINITE)
            fpu.pop()
            return
        x, dx = _operand(fpu, 0)
        y, dy = _operand(fpu, 1)
        if x.cls in _NAN_CLS or y.cls in _NAN_CLS:
            fpu.set_st(1, _nan_of(fpu, x, y))
            fpu.pop()
            return
        pi = x87math.PI_F
        if y.cls == sf.Cls.ZERO:  # atan2(+-0, x) = +-0 (x >= +0) or +-pi (x <= -0)
            if x.sign:
                fpu.set_st(1, _round_real(fpu, -pi if y.sign else pi, dx))
            else:
                signal(fpu, dx)
                fpu.set_st(1, sf.zero(F80, y.sign))
        elif y.cls == sf.Cls.INF or x.cls == sf.Cls.INF:
            if y.cls == sf.Cls.INF and x.cls == sf.Cls.INF:
                angle = 3 * pi / 4 if x.sign else pi / 4
            elif y.cls == sf.Cls.INF:
                angle = pi / 2
            else:
                angle = pi if x.sign else Fraction(0)
            angle = -angle if y.sign else angle
            if angle == 0:
                signal(fpu, dy)
                fpu.set_st(1, sf.zero(F80, y.sign))
            else:
                fpu.set_st(1, _round_real(fpu, angle, dx | dy))
        elif x.cls == sf.Cls.ZERO:
            fpu.set_st(1, _round_real(fpu, -pi / 2 if y.sign else pi / 2, dy))
        else:
            angle = x87math.atan2(sf.to_fraction(y), sf.to_fraction(x))
            fpu.set_st(1, _round_real(fpu, angle, dx | dy))
        fpu.pop()
    return _wrap(b, body, memory=False)


def _exponent(v: sf.Value) -> int:
    """The unbiased exponent of a finite non-zero value's leading bit."""
    return v.sig.bit_length() - 1 + v.exp


@x87(M.FPREM, M.FPREM1)
def _fprem(b: Insn) -> Handler:
    ieee = b.mnemonic == M.FPREM1

    def body(fpu: Fpu, off: int) -> None:
        fpu.fsw &= ~SW_C2  # complete unless set below; C0/C3 kept by the special cases
        if fpu.is_empty(0) or fpu.is_empty(1):
            stack_fault(fpu, overflow=False)
            fpu.set_st(0, INDEFINITE)
            return
        a, da = _operand(fpu, 0)
        c, dc = _operand(fpu, 1)
        if a.cls in _NAN_CLS or c.cls in _NAN_CLS:
            fpu.set_st(0, _nan_of(fpu, a, c))
            return
        if a.cls == sf.Cls.INF or c.cls == sf.Cls.ZERO:
            signal(fpu, sf.IE)
            fpu.set_st(0, INDEFINITE)
            return
        if a.cls == sf.Cls.ZERO or c.cls == sf.Cls.INF:  # ST(0) unchanged, quotient 0
            signal(fpu, da | dc)
            fpu.fsw &= ~CC_MASK
            return
        d = _exponent(a) - _exponent(c)
        av, cv = abs(sf.to_fraction(a)), abs(sf.to_fraction(c))
        if d < 64:
            q_frac = av / cv
            q = q_frac.numerator // q_frac.denominator
            if ieee:
                rest = q_frac - q
                if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and q & 1):
                    q += 1
            r = av - q * cv
            bits = (SW_C0 if q & 4 else 0) | (SW_C3 if q & 2 else 0) | (SW_C1 if q & 1 else 0)
            partial = False
        else:
            n = 32 + (d & 31)
            scaled = cv * Fraction(2) ** (d - n)
            q_frac = av / scaled
            q = q_frac.numerator // q_frac.denominator
            r = av - q * scaled
            bits, partial = 0, True
        r = -r if a.sign else r
        result = _round_exact(fpu, r, da | dc, sign_of_zero=a.sign)
        fpu.fsw = (fpu.fsw & ~CC_MASK) | bits | (SW_C2 if partial else 0)
        fpu.set_st(0, result)
    return _wrap(b, body, memory=False)


@x87(M.FSCALE)
def _fscale(b: Insn) -> Handler:
    def body(fpu: Fpu, off: int) -> None:
        if fpu.is_empty(0) or fpu.is_empty(1):
            stack_fault(fpu, overflow=False)
            fpu.set_st(0, INDEFINITE)
            return
        a, da = _operand(fpu, 0)
        c, dc = _operand(fpu, 1)
        if a.cls in _NAN_CLS or c.cls in _NAN_CLS:
            fpu.set_st(0, _nan_of(fpu, a, c))
            return
        if c.cls == sf.Cls.INF:
            if (a.cls == sf.Cls.ZERO and not c.sign) or (a.cls == sf.Cls.INF and c.sign):
                signal(fpu, sf.IE)
                fpu.set_st(0, INDEFINITE)
                return
            signal(fpu, da)
            if a.cls in _FINITE:
                fpu.set_st(0, sf.zero(F80, a.sign) if c.sign else sf.infinity(F80, a.sign))
            return
        if a.cls in (sf.Cls.ZERO, sf.Cls.INF):
            signal(fpu, dc)
            return
        n = 0
        if c.cls in _FINITE:
            cv = sf.to_fraction(c)
            n = abs(cv.numerator) // cv.denominator
            n = -min(n, 1 << 20) if cv < 0 else min(n, 1 << 20)
        # Not rounded to FCW.PC (measured on the host CPU): only range limits round.
        r = sf.round_pack(env_of(fpu.fcw | _FULL_PC), F80, a.sign, a.sig, a.exp + n)
        signal(fpu, r.flags | da | dc, r.rounded_up)
        fpu.set_st(0, r.bits)
    return _wrap(b, body, memory=False)


@x87(M.FXTRACT)
def _fxtract(b: Insn) -> Handler:
    def body(fpu: Fpu, off: int) -> None:
        if fpu.is_empty(0) or not fpu.is_empty(7):
            overflow = not fpu.is_empty(0)
            stack_fault(fpu, overflow=overflow)
            fpu.set_st(0, INDEFINITE)
            fpu.push(INDEFINITE)
            return
        v, de = _operand(fpu, 0)
        if v.cls in _NAN_CLS:
            nan = _nan_of(fpu, v)
            fpu.set_st(0, nan)
            fpu.push(nan)
            return
        if v.cls == sf.Cls.ZERO:  # exponent -inf, significand the zero (#Z)
            signal(fpu, sf.ZE)
            zero = fpu.st(0)
            fpu.set_st(0, sf.infinity(F80, 1))
            fpu.push(zero)
            return
        if v.cls == sf.Cls.INF:
            inf = fpu.st(0)
            signal(fpu, 0)
            fpu.set_st(0, sf.infinity(F80, 0))
            fpu.push(inf)
            return
        e = _exponent(v)
        signal(fpu, de)
        significand = sf.round_pack(sf.Env(), F80, v.sign, v.sig, v.exp - e).bits
        fpu.set_st(0, sf.from_int(sf.Env(), F80, e).bits)
        fpu.push(significand)
    return _wrap(b, body, memory=False)


# -- registration --------------------------------------------------------------------------

def _x87_mnemonics() -> list[int]:
    names = [n for n in dir(Mnemonic) if n.startswith("F") and n.isupper()]
    return [getattr(Mnemonic, n) for n in names if n not in ("FEMMS",)] + [M.WAIT]


@semantic(*_x87_mnemonics())
def _x87(b: Insn) -> Handler:
    if b.mnemonic != M.WAIT and not _FPU_FEATURES.intersection(b.ins.cpuid_features()) \
            and b.mnemonic not in (M.FXSAVE, M.FXSAVE64, M.FXRSTOR, M.FXRSTOR64):
        raise NotImplementedError
    cpu = b.cpu
    if cpu.legacy:
        return b.compile(b.next)  # ESC with no coprocessor (and WAIT): nothing happens
    builder = _BUILDERS.get(b.mnemonic)
    if builder is not None:
        return builder(b)
    name = iced_x86.Formatter(iced_x86.FormatterSyntax.INTEL).format_mnemonic(b.ins)
    stats = cpu.stats

    def handler() -> None:
        stats.count("unsupported", name)
        if cpu.cr0 & (CR0_EM | CR0_TS):
            raise CpuFault(NM)
        raise CpuFault(UD)
    return handler
