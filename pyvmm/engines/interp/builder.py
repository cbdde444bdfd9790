"""Turning one decoded instruction into a fast Python handler.

A semantic *builder* (see semantics/__init__.py) receives an `Insn`: the
iced-x86 `Instruction` plus helpers that describe its operands as Python
source fragments (`get(i)`, `set(i, expr)`, `ea(i)`).  The builder writes the
instruction's body as a few lines of Python, and `Insn.compile` turns it into
a zero-argument closure.  Compiled *factories* are cached by source text, so
a new instruction of an already-seen shape costs one call, not a compile.
Constants that vary between instances (displacements, immediates, next IP)
go through `const()` so they do not make the source unique.

This is the same form a block JIT needs: it can paste the bodies of a basic
block's instructions into one function.
"""

from __future__ import annotations

from collections.abc import Callable

import iced_x86
from iced_x86 import OpAccess, OpKind, Register

from pyvmm.engines.interp import faults
from pyvmm.engines.interp import flags as fl
from pyvmm.engines.interp.cpu import CS, DS, ES, FS, GS, SS_SEG, Cpu
from pyvmm.engines.interp.faults import CpuFault

Handler = Callable[[], None]

# iced register -> (GPR index, size in bytes, bit shift (8 for AH/CH/DH/BH)).
GPR: dict[int, tuple[int, int, int]] = {}
_NAMES64 = ("RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI")
for _i, _n in enumerate(_NAMES64):
    GPR[getattr(Register, _n)] = (_i, 8, 0)
    GPR[getattr(Register, "E" + _n[1:])] = (_i, 4, 0)
    GPR[getattr(Register, _n[1:])] = (_i, 2, 0)
for _i, _n in enumerate(("AL", "CL", "DL", "BL", "SPL", "BPL", "SIL", "DIL")):
    GPR[getattr(Register, _n)] = (_i, 1, 0)
for _i, _n in enumerate(("AH", "CH", "DH", "BH")):
    GPR[getattr(Register, _n)] = (_i, 1, 8)
for _i in range(8, 16):
    GPR[getattr(Register, f"R{_i}")] = (_i, 8, 0)
    GPR[getattr(Register, f"R{_i}D")] = (_i, 4, 0)
    GPR[getattr(Register, f"R{_i}W")] = (_i, 2, 0)
    GPR[getattr(Register, f"R{_i}L")] = (_i, 1, 0)

# iced segment register -> our segment index (ES CS SS DS FS GS).
SEGREG: dict[int, int] = {Register.ES: ES, Register.CS: CS, Register.SS: SS_SEG,
                          Register.DS: DS, Register.FS: FS, Register.GS: GS}

IMMEDIATE_KINDS = frozenset({
    OpKind.IMMEDIATE8, OpKind.IMMEDIATE8_2ND, OpKind.IMMEDIATE16, OpKind.IMMEDIATE32,
    OpKind.IMMEDIATE64, OpKind.IMMEDIATE8TO16, OpKind.IMMEDIATE8TO32, OpKind.IMMEDIATE8TO64,
    OpKind.IMMEDIATE32TO64})
STRING_SRC_KINDS = frozenset({OpKind.MEMORY_SEG_SI, OpKind.MEMORY_SEG_ESI, OpKind.MEMORY_SEG_RSI})
STRING_DST_KINDS = frozenset({OpKind.MEMORY_ESDI, OpKind.MEMORY_ESEDI, OpKind.MEMORY_ESRDI})
STRING_SEG_DI_KINDS = frozenset({OpKind.MEMORY_SEG_DI, OpKind.MEMORY_SEG_EDI,
                                 OpKind.MEMORY_SEG_RDI})

_MEMSIZE: dict[int, int] = {}
_INFO = iced_x86.InstructionInfoFactory()
# Memory operands read and then written: their read checks writability first.
_RMW_ACCESS = frozenset({OpAccess.READ_WRITE, OpAccess.READ_COND_WRITE})


def memory_size_bytes(memory_size: int) -> int:
    size = _MEMSIZE.get(memory_size)
    if size is None:
        size = iced_x86.MemorySizeInfo(memory_size).size
        _MEMSIZE[memory_size] = size
    return size


_MASKS = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}
# Legacy prefixes (SDM Vol. 2A §2.1.1) — scanned only to learn the address/operand size.
_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3})

# Globals every compiled handler can name.
HANDLER_GLOBALS: dict[str, object] = {
    "fl": fl, "faults": faults, "CpuFault": CpuFault,
    "LF_NONE": fl.LF_NONE, "LF_ADD": fl.LF_ADD, "LF_SUB": fl.LF_SUB, "LF_LOGIC": fl.LF_LOGIC,
    "LF_INC": fl.LF_INC, "LF_DEC": fl.LF_DEC, "MASK": fl.MASK, "SIGN": fl.SIGN,
    "PARITY": fl.PARITY, "CONDITIONS": fl.CONDITIONS,
    "ES": ES, "CS": CS, "SS": SS_SEG, "DS": DS, "FS": FS, "GS": GS,
}

_FACTORIES: dict[tuple[str, int], Callable[..., Handler]] = {}


def _factory(body: str, nconsts: int) -> Callable[..., Handler]:
    key = (body, nconsts)
    factory = _FACTORIES.get(key)
    if factory is None:
        params = ", ".join(["cpu", "regs", "read", "write"] + [f"k{i}" for i in range(nconsts)])
        indented = "\n".join("        " + line for line in body.strip("\n").splitlines())
        src = f"def _factory({params}):\n    def handler():\n{indented}\n    return handler\n"
        namespace: dict[str, object] = {}
        exec(compile(src, "<interp-handler>", "exec"), HANDLER_GLOBALS, namespace)  # noqa: S102
        factory = namespace["_factory"]  # type: ignore[assignment]
        _FACTORIES[key] = factory  # type: ignore[assignment]
    return factory  # type: ignore[return-value]


class Insn:
    """Build context for one decoded instruction (see CONTRACT.md)."""

    def __init__(self, cpu: Cpu, ins: iced_x86.Instruction, raw: bytes, code_bits: int,
                 ip: int) -> None:
        self.cpu = cpu
        self.ins = ins
        self.raw = raw
        self.code_bits = code_bits
        self.model = cpu.model
        self.ip = ip
        self.length = ins.len
        self.ip_mask = 0xFFFF if code_bits == 16 else (0xFFFFFFFF if code_bits == 32
                                                        else 0xFFFFFFFFFFFFFFFF)
        self.next_ip = (ip + ins.len) & self.ip_mask
        self.mnemonic = ins.mnemonic
        self.code = ins.code
        has66 = has67 = False
        for byte in raw:
            if byte in _PREFIXES:
                has66 |= byte == 0x66
                has67 |= byte == 0x67
            elif code_bits == 64 and 0x40 <= byte <= 0x4F:
                continue
            else:
                break
        if code_bits == 64:
            self.addr_size = 4 if has67 else 8
        elif code_bits == 32:
            self.addr_size = 2 if has67 else 4
        else:
            self.addr_size = 4 if has67 else 2
        self.addr_mask = _MASKS[self.addr_size]
        self.rep = 2 if ins.has_repne_prefix else (1 if ins.has_rep_prefix else 0)
        self.lock = ins.has_lock_prefix
        self._consts: list[int] = []
        self._uses_ea = False

    # -- operands ------------------------------------------------------------
    def kind(self, i: int) -> int:
        return self.ins.op_kind(i)

    def is_reg(self, i: int) -> bool:
        return self.ins.op_kind(i) == OpKind.REGISTER and self.ins.op_register(i) in GPR

    def is_mem(self, i: int) -> bool:
        return self.ins.op_kind(i) == OpKind.MEMORY

    def is_imm(self, i: int) -> bool:
        return self.ins.op_kind(i) in IMMEDIATE_KINDS

    def reg(self, i: int) -> tuple[int, int, int]:
        """(GPR index, size, shift) of register operand i."""
        return GPR[self.ins.op_register(i)]

    def size(self, i: int) -> int:
        """Operand i's size in bytes (an immediate takes operand 0's size)."""
        kind = self.ins.op_kind(i)
        if kind == OpKind.REGISTER:
            reg = self.ins.op_register(i)
            if reg in GPR:
                return GPR[reg][1]
            return 2  # segment registers
        if kind in IMMEDIATE_KINDS:
            return self.size(0) if i else {OpKind.IMMEDIATE8: 1, OpKind.IMMEDIATE16: 2}.get(
                kind, 4)
        return memory_size_bytes(self.ins.memory_size)

    def is_rmw(self, i: int) -> bool:
        """Operand i is read and written (ADD [m], r; XCHG; CMPXCHG writes either way).

        Such a read is a write access for paging and segment checks: a
        not-present page reports W=1 in the #PF error code (SDM Vol. 3A §4.7).
        """
        return _INFO.info(self.ins).op_access(i) in _RMW_ACCESS

    def imm(self, i: int, size: int | None = None) -> int:
        """Immediate operand i as iced sign-extends it, masked to `size` bytes.

        Default size: operand 0's size when i > 0 (ADD r/m, imm), else 8 (PUSH imm, INT n).
        """
        value = self.ins.immediate(i)
        if size is None:
            size = self.size(0) if i else 8
        return value & _MASKS[size]

    def seg(self, i: int | None = None) -> int:
        """Segment index of the (explicit or DS:SI string) memory operand, overrides applied."""
        return SEGREG[self.ins.memory_segment]

    def ea(self, i: int | None = None) -> str:
        """Source expression for the memory operand's offset (wrapped to the address size)."""
        ins = self.ins
        if ins.is_ip_rel_memory_operand:
            return self.const(ins.ip_rel_memory_address & self.addr_mask)
        parts = []
        base = ins.memory_base
        if base != Register.NONE:
            parts.append(f"regs[{GPR[base][0]}]")
        index = ins.memory_index
        if index != Register.NONE:
            scale = ins.memory_index_scale
            shift = {1: "", 2: " << 1", 4: " << 2", 8: " << 3"}[scale]
            parts.append(f"(regs[{GPR[index][0]}]{shift})")
        disp = ins.memory_displacement & self.addr_mask
        if not parts:
            return self.const(disp)
        if disp:
            parts.append(self.const(disp))
        return f"({' + '.join(parts)}) & {self.addr_mask:#x}"

    def get(self, i: int) -> str:
        """Source expression reading operand i (zero-extended int)."""
        kind = self.ins.op_kind(i)
        if kind == OpKind.REGISTER:
            reg = self.ins.op_register(i)
            if reg in SEGREG:
                return f"cpu.seg_sel[{SEGREG[reg]}]"
            index, size, shift = GPR[reg]
            if size == 8:
                return f"regs[{index}]"
            if shift:
                return f"((regs[{index}] >> 8) & 0xFF)"
            return f"(regs[{index}] & {_MASKS[size]:#x})"
        if kind in IMMEDIATE_KINDS:
            return self.const(self.imm(i))
        if kind == OpKind.MEMORY:
            self._uses_ea = True
            if self.is_rmw(i):
                return f"cpu.read_rmw({self.seg()}, ea, {self.size(i)})"
            return f"read({self.seg()}, ea, {self.size(i)})"
        raise NotImplementedError(f"operand kind {kind} for {self.ins}")

    def set(self, i: int, expr: str) -> str:
        """Source statement writing `expr` (any int; masked here) to operand i."""
        kind = self.ins.op_kind(i)
        if kind == OpKind.REGISTER:
            index, size, shift = GPR[self.ins.op_register(i)]
            if size == 8:
                return f"regs[{index}] = ({expr}) & 0xFFFFFFFFFFFFFFFF"
            if size == 4:  # a 32-bit destination zero-extends into the full register
                return f"regs[{index}] = ({expr}) & 0xFFFFFFFF"
            if size == 2:
                return f"regs[{index}] = (regs[{index}] & -65536) | (({expr}) & 0xFFFF)"
            if shift:
                return f"regs[{index}] = (regs[{index}] & -65281) | ((({expr}) & 0xFF) << 8)"
            return f"regs[{index}] = (regs[{index}] & -256) | (({expr}) & 0xFF)"
        if kind == OpKind.MEMORY:
            self._uses_ea = True
            return f"write({self.seg()}, ea, {self.size(i)}, {expr})"
        raise NotImplementedError(f"operand kind {kind} for {self.ins}")

    def const(self, value: object) -> str:
        """Name of a per-instruction constant inside the compiled body."""
        self._consts.append(value)  # type: ignore[arg-type]
        return f"k{len(self._consts) - 1}"

    @staticmethod
    def push(value: str, size: int) -> str:
        """Source pushing `value` (`size` bytes), as `Cpu.push` does it: the store at the
        decremented stack pointer first, so a fault leaves RSP as it was (SDM Vol. 1
        §6.2.2; Vol. 2B "PUSH").  As statements, so a block keeps RSP in a local."""
        return (f"nsp = (regs[4] - {size}) & cpu.stack_mask\n"
                f"write(2, nsp, {size}, {value})\n"
                "regs[4] = regs[4] & ~cpu.stack_mask | nsp")

    @staticmethod
    def pop(target: str, size: int) -> str:
        """Source popping `size` bytes into `target` (a name or `cpu.rip`), as `Cpu.pop`:
        the load first, then RSP incremented (SDM Vol. 2B "POP")."""
        return ("nsp = regs[4] & cpu.stack_mask\n"
                f"{target} = read(2, nsp, {size})\n"
                f"regs[4] = regs[4] & ~cpu.stack_mask | (nsp + {size}) & cpu.stack_mask")

    @property
    def next(self) -> str:
        """Source for `cpu.rip = <next ip>`."""
        return f"cpu.rip = {self.const(self.next_ip)}"

    # -- compiling -------------------------------------------------------------
    def compile(self, body: str) -> Handler:
        """Compile `body` (Python statements) into the instruction's handler.

        Names available: cpu, regs (cpu.regs), read/write (cpu.read/cpu.write),
        ea (the memory operand's offset, if get/set used one), k0.. (consts),
        and HANDLER_GLOBALS.
        """
        if self._uses_ea:
            body = f"ea = {self.ea()}\n" + body.strip("\n")
        factory = _factory(body, len(self._consts))
        cpu = self.cpu
        return factory(cpu, cpu.regs, cpu.read, cpu.write, *self._consts)

    # -- closure helpers (for builders that prefer plain Python) ---------------
    def reader(self, i: int) -> Callable[[], int]:
        saved, self._consts, self._uses_ea = (self._consts, self._uses_ea), [], False
        expr = self.get(i)
        fn = self.compile(f"return {expr}")
        self._consts, self._uses_ea = saved
        return fn  # type: ignore[return-value]

    def writer(self, i: int) -> Callable[[int], None]:
        saved, self._consts, self._uses_ea = (self._consts, self._uses_ea), [], False
        body = self.set(i, "value")
        if self._uses_ea:
            body = f"ea = {self.ea()}\n{body}"
        namespace: dict[str, object] = {}
        params = ", ".join(["cpu", "regs", "read", "write"] +
                           [f"k{j}" for j in range(len(self._consts))])
        src = (f"def _f({params}):\n    def w(value):\n"
               + "\n".join("        " + ln for ln in body.splitlines()) + "\n    return w\n")
        exec(compile(src, "<interp-writer>", "exec"), HANDLER_GLOBALS, namespace)  # noqa: S102
        cpu = self.cpu
        fn = namespace["_f"](cpu, cpu.regs, cpu.read, cpu.write, *self._consts)  # type: ignore
        self._consts, self._uses_ea = saved
        return fn  # type: ignore[return-value]

    def address(self) -> Callable[[], int]:
        """Closure computing the memory operand's offset."""
        saved, self._consts, self._uses_ea = (self._consts, self._uses_ea), [], False
        fn = self.compile(f"return {self.ea()}")
        self._consts, self._uses_ea = saved
        return fn  # type: ignore[return-value]
