"""Translating a guest basic block into one compiled Python function.

A block is straight-line code from CS:RIP (following direct near JMP and
CALL, like a trace): instructions are decoded with iced-x86 and built with
the interpreter's own semantic builders (through `CaptureInsn`), until and
including the first instruction that is not plain data processing (any other
control transfer, anything touching segment, control or debug registers,
flags IF/TF, ports, interrupts, HLT, system instructions), or until
`MAX_BLOCK` instructions or the end of the first instruction's linear page.
Only the *last* instruction of a block may therefore change the code context
(CS, mode, paging) the rest was decoded under.

The generated function keeps the interpreter's guarantees:

- every instruction runs exactly the interpreter's body (or its handler);
- a fault leaves RIP at the faulting instruction and `jit.done` at its index
  in the block (the engine counts instructions from it);
- `EndBatch` / `SoftwareInterrupt` raised by an instruction propagate after it
  completed, with `jit.done` at its index;
- after an instruction that may have written guest memory, if a write
  invalidated translated code (self-modifying code, SDM Vol. 3A §11.6) the
  block stops there (`BlockExit`) so the next instruction is decoded afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import iced_x86
from iced_x86 import Code, FlowControl, Mnemonic, OpKind

from pyvmm.engines.interp import semantics
from pyvmm.engines.interp.builder import GPR, HANDLER_GLOBALS, Handler
from pyvmm.engines.interp.cpu import Cpu
from pyvmm.engines.interp.faults import CpuFault
from pyvmm.engines.interp.signals import EndBatch, SoftwareInterrupt
from pyvmm.engines.jit.capture import CaptureInsn
from pyvmm.engines.jit.optimize import (
    Stmt,
    drop_dead_flags,
    lazy_result,
    specialise_condition,
)
from pyvmm.engines.jit.source import Body, prepare

MAX_BLOCK = 64  # instructions per block at most

_M = Mnemonic
# Instructions that may sit in the middle of a block: they only compute on GPRs,
# status flags / DF and memory, and never change CS, mode, paging, IF/TF or the
# interrupt shadow (SDM Vol. 1 ch. 7 "general-purpose instructions").
CONTINUES: frozenset[int] = frozenset({
    _M.ADD, _M.ADC, _M.SUB, _M.SBB, _M.CMP, _M.AND, _M.OR, _M.XOR, _M.TEST, _M.INC, _M.DEC,
    _M.NEG, _M.NOT,
    _M.MOV, _M.MOVZX, _M.MOVSX, _M.MOVSXD, _M.LEA, _M.XCHG, _M.XADD, _M.CMPXCHG, _M.BSWAP,
    _M.NOP, _M.PAUSE, _M.XLATB, _M.LAHF, _M.SAHF,
    _M.CBW, _M.CWDE, _M.CDQE, _M.CWD, _M.CDQ, _M.CQO,
    _M.CMOVO, _M.CMOVNO, _M.CMOVB, _M.CMOVAE, _M.CMOVE, _M.CMOVNE, _M.CMOVBE, _M.CMOVA,
    _M.CMOVS, _M.CMOVNS, _M.CMOVP, _M.CMOVNP, _M.CMOVL, _M.CMOVGE, _M.CMOVLE, _M.CMOVG,
    _M.SETO, _M.SETNO, _M.SETB, _M.SETAE, _M.SETE, _M.SETNE, _M.SETBE, _M.SETA,
    _M.SETS, _M.SETNS, _M.SETP, _M.SETNP, _M.SETL, _M.SETGE, _M.SETLE, _M.SETG,
    _M.PUSH, _M.POP, _M.PUSHA, _M.PUSHAD, _M.POPA, _M.POPAD, _M.PUSHF, _M.PUSHFD,
    _M.PUSHFQ, _M.ENTER, _M.LEAVE,
    _M.ROL, _M.ROR, _M.RCL, _M.RCR, _M.SHL, _M.SAL, _M.SHR, _M.SAR, _M.SHLD, _M.SHRD,
    _M.MUL, _M.IMUL, _M.DIV, _M.IDIV,
    _M.DAA, _M.DAS, _M.AAA, _M.AAS, _M.AAM, _M.AAD,
    _M.BT, _M.BTS, _M.BTR, _M.BTC, _M.BSF, _M.BSR, _M.POPCNT, _M.LZCNT, _M.TZCNT,
    _M.MOVSB, _M.MOVSW, _M.MOVSD, _M.MOVSQ, _M.CMPSB, _M.CMPSW, _M.CMPSD, _M.CMPSQ,
    _M.SCASB, _M.SCASW, _M.SCASD, _M.SCASQ, _M.LODSB, _M.LODSW, _M.LODSD, _M.LODSQ,
    _M.STOSB, _M.STOSW, _M.STOSD, _M.STOSQ,
    _M.CLC, _M.STC, _M.CMC, _M.CLD, _M.STD,
})


JCC: frozenset[int] = frozenset({
    _M.JO, _M.JNO, _M.JB, _M.JAE, _M.JE, _M.JNE, _M.JBE, _M.JA, _M.JS, _M.JNS, _M.JP,
    _M.JNP, _M.JL, _M.JGE, _M.JLE, _M.JG})


class BlockExit(Exception):  # noqa: N818 - a signal, not an error
    """A block stopped early after an instruction that invalidated translated code."""


BLOCK_EXIT = BlockExit()


@dataclass
class Block:
    """A translated block: the function, its length and where its bytes came from."""

    fn: Handler | None  # None: the first instruction cannot be translated
    length: int
    ips: tuple[int, ...]
    pages: frozenset[tuple[int, int]]  # (virtual, physical) page numbers of its bytes
    source: str = ""
    size: int = 0  # bytes, from the first instruction's first to the last one's last


class BlockState:
    """What a running block shares with the engine (index of the raising instruction)."""

    done = 0


_GLOBALS: dict[str, object] = dict(HANDLER_GLOBALS)
_GLOBALS.update({"EndBatch": EndBatch, "SoftwareInterrupt": SoftwareInterrupt,
                 "BlockExit": BlockExit})


_DIRECT = frozenset({OpKind.NEAR_BRANCH16, OpKind.NEAR_BRANCH32, OpKind.NEAR_BRANCH64})


def direct_target(b: CaptureInsn) -> int | None:
    """Target of a near direct JMP/CALL, which a block follows (as a trace does)."""
    ins = b.ins
    if ins.mnemonic in (Mnemonic.JMP, Mnemonic.CALL) and ins.op_count == 1 and \
            ins.op_kind(0) in _DIRECT:
        return ins.near_branch_target & b.ip_mask
    return None


def continues(b: CaptureInsn) -> bool:
    """True when the next instruction may be translated into the same block."""
    ins = b.ins
    if ins.flow_control != FlowControl.NEXT or ins.mnemonic not in CONTINUES:
        return False
    for i in range(ins.op_count):
        if ins.op_kind(i) == OpKind.REGISTER and ins.op_register(i) not in GPR:
            return False  # segment, control, debug registers
    return True


@dataclass
class _Item:
    b: CaptureInsn
    handler: Handler
    lin: int


class Translator:
    """Builds `Block`s for the code at CS:RIP of one `Cpu` (x86-64 model)."""

    def __init__(self, cpu: Cpu, fetch: Callable[[int], tuple[bytes, int]],
                 state: BlockState, smc: list[bool]) -> None:
        self.cpu = cpu
        self.fetch = fetch  # the interpreter decode cache's fetch(rip) -> (bytes, linear)
        self.state = state
        self.smc = smc
        self.optimize = True  # drop dead flag writes (optimize.py)
        semantics.load_groups()

    def _decode(self, rip: int) -> _Item | None:
        cpu = self.cpu
        raw, lin = self.fetch(rip)
        ins = iced_x86.Decoder(cpu.code_bits, raw, 0, ip=rip).decode()
        if ins.code == Code.INVALID:
            return None
        builder = semantics.lookup(ins.code, ins.mnemonic)
        if builder is None:
            return None
        b = CaptureInsn(cpu, ins, raw[:ins.len], cpu.code_bits, rip)
        try:
            handler = builder(b)
        except NotImplementedError:
            return None
        return _Item(b, handler, lin)

    def translate(self) -> Block | None:
        """The block at CS:RIP; None when even its first byte cannot be fetched."""
        cpu = self.cpu
        rip = cpu.rip
        items: list[_Item] = []
        page = None
        while len(items) < MAX_BLOCK:
            try:
                item = self._decode(rip)
            except CpuFault:
                if not items:
                    return None  # the interpreter raises the fetch fault
                break
            if item is None:
                break
            if page is None:
                page = item.lin >> 12
            elif item.lin >> 12 != page:
                break
            items.append(item)
            rip = item.b.next_ip
            target = direct_target(item.b)
            if target is not None:
                if any(it.b.ip == target for it in items):
                    break  # a loop: one copy per block
                rip = target
            elif not continues(item.b):
                break
        pages = self._pages(items) if items else self._pages_at(cpu.rip)
        if not items:
            return Block(None, 0, (cpu.rip,), pages)
        fn, source = self._compile(items)
        size = (items[-1].lin + items[-1].b.length - items[0].lin) & cpu.lin_mask
        return Block(fn, len(items), tuple(it.b.ip for it in items), pages, source, size)

    # ------------------------------------------------------------------
    def _pages_at(self, rip: int) -> frozenset[tuple[int, int]]:
        cpu = self.cpu
        try:
            _, lin = self.fetch(rip)
            return frozenset({(lin >> 12, cpu.fetch_physical_page(lin))})
        except CpuFault:
            return frozenset()

    def _pages(self, items: list[_Item]) -> frozenset[tuple[int, int]]:
        cpu = self.cpu
        pages = set()
        for item in items:
            pages.add((item.lin >> 12, cpu.fetch_physical_page(item.lin)))
            last = (item.lin + item.b.length - 1) & cpu.lin_mask
            if last >> 12 != item.lin >> 12:
                try:
                    pages.add((last >> 12, cpu.fetch_physical_page(last)))
                except CpuFault:
                    pass
        return frozenset(pages)

    def _compile(self, items: list[_Item]) -> tuple[Handler, str]:
        params: dict[str, object] = {}
        stmts: list[Stmt] = []

        def emit(text: str) -> None:
            stmts.append(Stmt(text, False))

        rip_exact = True
        last_index = len(items) - 1
        lazy: dict[str, str] | None = None  # the previous instruction's lazy flag result
        exact_sub = False
        for j, item in enumerate(items):
            b = item.b
            last = j == last_index
            captured = b.source_of(item.handler)
            body: Body | None = None
            if captured is not None:
                follow = b.next_ip if last else items[j + 1].b.ip
                body = prepare(captured.body, captured.consts, str(j), follow, last)
            if j:
                stmts.append(Stmt(f"_jn = {j}", True))
            if body is None:
                if not rip_exact:
                    emit(f"cpu.rip = {b.ip:#x}")
                name = f"_jh{j}"
                params[name] = item.handler
                emit(f"{name}()")
                rip_exact = True
                may_write = True
            else:
                if body.needs_rip and not rip_exact:
                    stmts.append(Stmt(f"cpu.rip = {b.ip:#x}", True))
                params.update(body.params)
                statements = body.statements
                if lazy is not None and self.optimize and b.mnemonic in JCC:
                    first = specialise_condition(statements[0].text, lazy, exact_sub)
                    statements = [Stmt(first, False), *statements[1:]]
                stmts.extend(statements)
                rip_exact = not body.elided_next
                may_write = body.may_write
            lazy = lazy_result(body.statements) if body is not None else None
            exact_sub = b.mnemonic in (Mnemonic.CMP, Mnemonic.SUB)
            if may_write and not last:
                emit(f"if _jsmc[0]:\n    cpu.rip = {items[j + 1].b.ip:#x}\n    raise BlockExit")
        if self.optimize:
            stmts, _ = drop_dead_flags(stmts)
        ips = tuple(it.b.ip for it in items)
        inner = "\n".join("            " + ln for stmt in stmts
                          for ln in stmt.text.splitlines())
        names = ["cpu", "regs", "read", "write", "_jit", "_jips", "_jsmc", *params]
        src = (f"def _jmake({', '.join(names)}):\n"
               f"    def block():\n"
               f"        _jn = 0\n"
               f"        try:\n{inner}\n"
               f"        except (EndBatch, SoftwareInterrupt, BlockExit):\n"
               f"            _jit.done = _jn\n"
               f"            raise\n"
               f"        except BaseException:\n"
               f"            cpu.rip = _jips[_jn]\n"
               f"            _jit.done = _jn\n"
               f"            raise\n"
               f"    return block\n")
        namespace: dict[str, object] = {}
        exec(compile(src, f"<jit-block {ips[0]:#x}>", "exec"), _GLOBALS, namespace)  # noqa: S102
        cpu = self.cpu
        make = namespace["_jmake"]
        fn = make(cpu, cpu.regs, cpu.read, cpu.write, self.state, ips, self.smc,  # type: ignore
                  *params.values())
        return fn, src
