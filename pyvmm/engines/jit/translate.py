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

A loop is translated whole (Translator.translate): when the code at CS:RIP is
the target of a backward branch that one of the paths through its conditional
branches (both arms) comes back along, the block is those paths as nested
`if`/`else` inside one `while` loop, which runs iterations while a whole one
still fits in the instruction budget and leaves at the loop's exits.  Guest
registers live in Python locals for the block's life (regcache.py).  The block
function takes the budget and returns the instructions it ran.

The generated function keeps the interpreter's guarantees:

- every instruction runs exactly the interpreter's body (or its handler);
- a fault leaves RIP at the faulting instruction and `jit.done` at its index
  in the block, loop iterations included (the engine counts instructions from
  it); which instruction raised comes from the traceback's line number (every
  generated line belongs to one instruction), so nothing is stored per
  instruction on the fast path;
- registers held in locals are stored back before the exception leaves;
- `EndBatch` / `SoftwareInterrupt` raised by an instruction propagate after it
  completed, with `jit.done` at its index;
- after an instruction that may have written guest memory, if a write
  invalidated translated code (self-modifying code, SDM Vol. 3A §11.6) the
  block stops there (`BlockExit`) so the next instruction is decoded afresh.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import iced_x86
from iced_x86 import Code, FlowControl, Mnemonic, OpKind

from pyvmm.engines.interp import semantics
from pyvmm.engines.interp.builder import GPR, HANDLER_GLOBALS, Handler
from pyvmm.engines.interp.cpu import Cpu
from pyvmm.engines.interp.faults import CpuFault
from pyvmm.engines.interp.signals import EndBatch, SoftwareInterrupt
from pyvmm.engines.jit import memfast
from pyvmm.engines.jit.capture import CaptureInsn
from pyvmm.engines.jit.optimize import (
    Stmt,
    drop_dead_flags,
    lazy_result,
    specialise_condition,
)
from pyvmm.engines.jit.regcache import is_barrier, load, registers, rename, store
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
    """What a running block shares with the engine: the index of the instruction that
    raised (from the block's start, loop iterations included), and the straight-line
    pieces that loop blocks ran beyond one per block execution."""

    done = 0
    segments = 0


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


@dataclass
class _Seg:
    """Straight-line instructions of one path, then how the path ends.

    `end` is "exit" (the last instruction sets RIP itself), "goto" (leave the
    block at `ip`), "back" (branch back to the block's first instruction: the
    next loop iteration) or "jcc" (the last instruction is a conditional branch;
    `taken` and `fall` are the two continuations).
    """

    items: list[_Item]
    end: str
    ip: int = 0
    taken: _Seg | None = None
    fall: _Seg | None = None


_JCC_SHAPE = re.compile(r"\Aif (.+):\n    cpu\.rip = (\d+)\nelse:\n    cpu\.rip = (\d+)\Z")
_COMPOUND = ("if ", "elif ", "else:", "while ", "for ", "with ", "try:", "except")
MAX_LOOP = 64       # instructions in a loop block's whole tree
MAX_BRANCHES = 4    # conditional branches along one path of a loop block


class Translator:
    """Builds `Block`s for the code at CS:RIP of one `Cpu` (x86-64 model).

    A block is a straight line ending at the first control transfer it cannot
    follow (module docstring) -- unless the code at CS:RIP is a loop: when the
    paths through its conditional branches (both arms, up to MAX_BRANCHES deep
    and MAX_LOOP instructions in all) come back to CS:RIP, the block is one
    Python `while` loop over that tree, running iterations while a whole one
    still fits in the batch's instruction budget.
    """

    def __init__(self, cpu: Cpu, fetch: Callable[[int], tuple[bytes, int]],
                 state: BlockState, smc: list[bool]) -> None:
        self.cpu = cpu
        self.fetch = fetch  # the interpreter decode cache's fetch(rip) -> (bytes, linear)
        self.state = state
        self.smc = smc
        self.optimize = True  # drop dead flag writes (optimize.py)
        self.loops = True  # compile loops to `while` (the tree above)
        self.cache_registers = True  # guest registers in locals (regcache.py)
        self.inline_memory = True  # the software TLB's hit path in block code (memfast.py)
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
        tree = self._loop_tree(items) if self.loops and items[-1].b.mnemonic in JCC else None
        if tree is not None:
            all_items = _tree_items(tree)
            try:
                fn, source, length = self._compile(tree, loop=True)
            except _NotTree:
                tree = None
        if tree is not None:
            pages = self._pages(all_items)
            ips = tuple(dict.fromkeys(it.b.ip for it in all_items))
            return Block(fn, length, ips, pages, source, _tree_size(all_items, cpu.lin_mask))
        fn, source, length = self._compile(_Seg(items, "exit"), loop=False)
        size = (items[-1].lin + items[-1].b.length - items[0].lin) & cpu.lin_mask
        return Block(fn, length, tuple(it.b.ip for it in items), pages, source, size)

    # -- loops ---------------------------------------------------------------
    def _loop_tree(self, line: list[_Item]) -> _Seg | None:
        """The tree of paths from CS:RIP when one of them branches back to it, else None."""
        # First the paths' shape from iced-x86 alone (cheap); the semantic builders
        # run only when a path does come back.
        if self._walk(line, self._peek, {}) is None:
            return None
        return self._walk(line, self._decode, {it.b.ip: it for it in line})

    def _peek(self, ip: int) -> _Peek | None:
        raw, lin = self.fetch(ip)
        ins = iced_x86.Decoder(self.cpu.code_bits, raw, 0, ip=ip).decode()
        return None if ins.code == Code.INVALID else _Peek(ins, lin, self.cpu.code_bits)

    def _walk(self, line: list[_Item], decode: Callable[[int], object],
              decoded: dict[int, object]) -> _Seg | None:
        start = line[0].b.ip
        page = line[0].lin >> 12
        budget = [MAX_LOOP]
        found = [False]

        def item_at(ip: int) -> _Item | None:
            if ip not in decoded:
                try:
                    item = decode(ip)
                except CpuFault:
                    item = None
                if item is not None and item.lin >> 12 != page:  # type: ignore[attr-defined]
                    item = None
                decoded[ip] = item
            return decoded[ip]  # type: ignore[return-value]

        def path(ip: int, seen: frozenset[int], branches: int, source: int) -> _Seg:
            # `source`: the instruction that transferred control to `ip`.  Only a
            # backward transfer to the start closes a loop (the start is a loop header).
            items: list[_Item] = []
            while True:
                if ip == start and (items or seen) and source >= start:
                    found[0] = True
                    return _Seg(items, "back")
                if ip in seen or budget[0] <= 0:
                    return _Seg(items, "goto", ip)
                item = item_at(ip)
                if item is None:
                    return _Seg(items, "goto", ip)
                seen = seen | {ip}
                items.append(item)
                budget[0] -= 1
                b = item.b
                if b.mnemonic in JCC:
                    if branches >= MAX_BRANCHES or _jcc_targets(item) is None:
                        return _Seg(items, "exit")
                    taken, fall = _jcc_targets(item)  # type: ignore[misc]
                    seg = _Seg(items, "jcc")
                    # The other arm of the branch that closes the loop is its exit:
                    # the block leaves there, the code after the loop is a block of its own.
                    closes = taken == start and b.ip >= start
                    seg.taken = path(taken, seen, branches + 1, b.ip)
                    seg.fall = _Seg([], "goto", fall) if closes else \
                        path(fall, seen, branches + 1, b.ip)
                    return seg
                source = b.ip
                target = direct_target(b)
                if target is not None:
                    ip = target
                elif continues(b):
                    ip = b.next_ip
                else:
                    return _Seg(items, "exit")

        tree = path(start, frozenset(), 0, -1)
        return tree if found[0] else None

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

    # -- code generation -----------------------------------------------------
    def _compile(self, tree: _Seg, loop: bool) -> tuple[Handler, str, int]:
        """Source of the block function for `tree`; returns (function, source, length).

        The function takes the instruction budget and returns how many
        instructions it ran.  Each generated line is owned by one instruction
        (its index from the start of the iteration and its address): a fault's
        line number (from the traceback) says which one raised, so no index is
        stored per instruction.  `length` is the longest iteration.
        """
        start = tree.items[0].b.ip
        params: dict[str, object] = {}
        lines: list[tuple[str, tuple[int, int] | None]] = []  # (text, owner)
        counter = [0]
        longest = [0]

        def emit_seg(seg: _Seg, depth: int, k: int, lazy: dict[str, str] | None,
                     exact_sub: bool, rip_exact: bool, segments: int) -> None:
            stmts: list[tuple[Stmt, tuple[int, int]]] = []
            n = len(seg.items)
            cond = None
            for j, item in enumerate(seg.items):
                b = item.b
                owner = (k + j, b.ip)
                final = j == n - 1
                last = final and seg.end == "exit"
                if final and seg.end == "jcc":
                    follow = b.next_ip
                elif final:
                    follow = seg.ip if seg.end == "goto" else start
                else:
                    follow = seg.items[j + 1].b.ip
                captured = b.source_of(item.handler)
                body: Body | None = None
                tag = str(counter[0])
                counter[0] += 1
                if captured is not None:
                    body = prepare(captured.body, captured.consts, tag,
                                   follow, last or (final and seg.end == "jcc"))
                if body is None:
                    if not rip_exact:
                        stmts.append((Stmt(f"cpu.rip = {b.ip:#x}", False), owner))
                    name = f"_jh{tag}"
                    params[name] = item.handler
                    stmts.append((Stmt(f"{name}()", False), owner))
                    rip_exact = True
                    may_write = True
                    if final and seg.end == "jcc":
                        raise _NotTree
                else:
                    if body.needs_rip and not rip_exact:
                        stmts.append((Stmt(f"cpu.rip = {b.ip:#x}", True), owner))
                    params.update(body.params)
                    statements = body.statements
                    if lazy is not None and self.optimize and b.mnemonic in JCC:
                        first = specialise_condition(statements[0].text, lazy, exact_sub)
                        statements = [Stmt(first, False), *statements[1:]]
                    if final and seg.end == "jcc":
                        match = _JCC_SHAPE.match(statements[0].text) \
                            if len(statements) == 1 else None
                        if match is None:
                            raise _NotTree
                        cond = match.group(1)
                    else:
                        stmts.extend((st, owner) for st in statements)
                    rip_exact = not body.elided_next
                    may_write = body.may_write
                lazy = lazy_result(body.statements) if body is not None else None
                exact_sub = b.mnemonic in (Mnemonic.CMP, Mnemonic.SUB)
                if may_write and not (final and seg.end in ("exit", "goto")):
                    nxt = follow
                    stmts.append((Stmt(f"if _jsmc[0]:\n    cpu.rip = {nxt:#x}\n"
                                       f"    raise BlockExit", False), owner))
            if self.optimize:
                kept, _ = drop_dead_flags([st for st, _ in stmts])
                ids = {id(st) for st in kept}
                stmts = [(st, o) for st, o in stmts if id(st) in ids]
            pad = "    " * depth
            for st, owner in stmts:
                for ln in st.text.splitlines():
                    lines.append((pad + ln, owner))
            end_k = k + n
            segments += 1 if seg.items else 0
            last_owner = (end_k - 1, seg.items[-1].b.ip) if seg.items else (k, start)
            if seg.end == "jcc":
                assert seg.taken is not None and seg.fall is not None and cond is not None
                lines.append((f"{pad}if {cond}:", last_owner))
                emit_seg(seg.taken, depth + 1, end_k, None, False, False, segments)
                lines.append((f"{pad}else:", last_owner))
                emit_seg(seg.fall, depth + 1, end_k, None, False, False, segments)
                return
            longest[0] = max(longest[0], end_k)
            if seg.end == "goto":
                lines.append((f"{pad}cpu.rip = {seg.ip:#x}", last_owner))
            if not loop:
                return
            lines.append((f"{pad}_jc += {end_k}", last_owner))
            lines.append((f"{pad}_js += {segments}", last_owner))
            if seg.end == "back":
                lines.append((f"{pad}if _jc + _jlen <= _jb:", last_owner))
                lines.append((f"{pad}    continue", last_owner))
                lines.append((f"{pad}cpu.rip = {start:#x}", last_owner))
            lines.append((f"{pad}break", last_owner))

        depth = 4 if loop else 3
        emit_seg(tree, depth, 0, None, False, True, 0)
        lines = [(_fold_masks(text), owner) for text, owner in lines]
        # Registers in locals (regcache.py); barriers store and reload them.
        texts = [text for text, _ in lines]
        cached = registers(texts) if self.cache_registers and self.cpu.mem_hooks is None \
            else None
        if any(t.lstrip().startswith(("try:", "except", "finally:")) for t in texts):
            cached = None  # a body's own fault path (LEAVE, POP m) repairs the list itself
        regs = sorted(cached) if cached else []
        if regs and not loop and not _caching_pays(texts, len(regs)):
            regs = []
        barriers = False
        body_lines: list[tuple[str, tuple[int, int] | None]] = []
        if regs:
            for text, owner in lines:
                stripped = text.lstrip()
                pad = text[:len(text) - len(stripped)]
                if is_barrier(stripped) and not stripped.startswith(_COMPOUND):
                    barriers = True
                    body_lines += [(pad + s, owner) for s in store(regs)]
                    body_lines.append((pad + "_jw = 0", owner))
                    body_lines.append((pad + stripped, owner))  # the list is current here
                    body_lines += [(pad + s, owner) for s in load(regs)]
                    body_lines.append((pad + "_jw = 1", owner))
                else:
                    body_lines.append((rename(text), owner))
        else:
            body_lines = lines
        if regs and any(is_barrier(t.lstrip()) and t.lstrip().startswith(_COMPOUND)
                        for t, _ in lines):
            regs = []
            barriers = False
            body_lines = lines  # a call inside a condition: keep the list authoritative
        any_reads = any_writes = False
        if self.inline_memory:
            inlined: list[tuple[str, tuple[int, int] | None]] = []
            for text, owner in body_lines:
                text, reads, writes = memfast.inline(text)
                any_reads |= reads
                any_writes |= writes
                inlined += [(ln, owner) for ln in text.splitlines()]
            body_lines = inlined
            if any_reads or any_writes:
                params.update(memfast.closure(self.cpu))
        writeback = store(regs)
        handler_store = (["if _jw:", *("    " + ln for ln in writeback)] if barriers
                         else writeback)
        prelude = load(regs) + memfast.prelude(any_reads, any_writes) + \
            (["_jw = 1"] if barriers else []) + \
            (["_jc = 0", "_js = 0"] if loop else [])
        done = "_jc + _k" if loop else "_k"
        head = ["def _jmake(cpu, regs, read, write, _jit, _jsmc, _jline, _jlen, "
                + ", ".join(params) + "):" if params else
                "def _jmake(cpu, regs, read, write, _jit, _jsmc, _jline, _jlen):",
                "    def block(_jb):"]
        src_lines: list[tuple[str, tuple[int, int] | None]] = [(h, None) for h in head]
        src_lines += [("        " + ln, None) for st in prelude for ln in st.splitlines()]
        src_lines.append(("        try:", None))
        if loop:
            src_lines.append(("            while True:", None))
        src_lines += body_lines
        tail = [
            "        except (EndBatch, SoftwareInterrupt, BlockExit) as _je:",
            *("            " + ln for ln in handler_store),
            "            _k = _jline[_je.__traceback__.tb_lineno][0]",
            f"            _jit.done = {done}",
            "            raise",
            "        except BaseException as _je:",
            *("            " + ln for ln in handler_store),
            "            _k, cpu.rip = _jline[_je.__traceback__.tb_lineno]",
            f"            _jit.done = {done}",
            "            raise",
            *("        " + ln for ln in writeback),
        ]
        if loop:
            tail += ["        _jit.segments += _js - 1", "        return _jc"]
        else:
            tail.append(f"        return {longest[0]}")
        tail.append("    return block")
        src_lines += [(t, None) for t in tail]
        line_owner = {i + 1: owner for i, (_, owner) in enumerate(src_lines)
                      if owner is not None}
        src = "\n".join(text for text, _ in src_lines) + "\n"
        namespace: dict[str, object] = {}
        exec(compile(src, f"<jit-block {start:#x}>", "exec"), _GLOBALS, namespace)  # noqa: S102
        cpu = self.cpu
        make = namespace["_jmake"]
        fn = make(cpu, cpu.regs, cpu.read, cpu.write, self.state, self.smc,  # type: ignore
                  line_owner, longest[0], *params.values())
        return fn, src, longest[0]


_DOUBLE_MASK = re.compile(r" & (\d+) & \1(?=$|[),\]:])")


def _fold_masks(text: str) -> str:
    """`x & M & M` -> `x & M` (the bodies mask a register read and then its use)."""
    return _DOUBLE_MASK.sub(r" & \1", text)


class _Peek:
    """An instruction decoded by iced-x86 only, shaped like an `_Item` for `_walk`."""

    def __init__(self, ins: iced_x86.Instruction, lin: int, code_bits: int) -> None:
        self.b = self
        self.ins = ins
        self.lin = lin
        self.ip = ins.ip
        self.mnemonic = ins.mnemonic
        self.code_bits = code_bits
        self.ip_mask = (1 << code_bits) - 1
        self.next_ip = (ins.ip + ins.len) & self.ip_mask


class _NotTree(Exception):  # noqa: N818 - control flow inside the translator
    """A conditional branch whose body is not the plain two-way shape."""


def _caching_pays(texts: list[str], cached: int) -> bool:
    """Whether locals beat list items in a straight-line block: each cached register costs
    a load and a store per execution, and a store and a load again around each barrier
    (measured: bench-io's two-instruction OUT block ran slower with them)."""
    uses = sum(text.count("regs[") for text in texts)
    barriers = sum(is_barrier(text.lstrip()) for text in texts)
    return uses >= 2 * cached * (1 + barriers)


def _jcc_targets(item: _Item) -> tuple[int, int] | None:
    """(taken, not taken) of a near Jcc with a decode-time target."""
    ins = item.b.ins
    if ins.op_count != 1 or ins.op_kind(0) not in _DIRECT:
        return None
    target = ins.near_branch_target & item.b.ip_mask
    if item.b.code_bits == 64 and (target + (1 << 47)) >> 48 & 0xFFFF:
        return None  # non-canonical: the branch faults (#GP), keep it a block end
    return target, item.b.next_ip


def _tree_items(tree: _Seg) -> list[_Item]:
    out: list[_Item] = []
    stack = [tree]
    while stack:
        seg = stack.pop()
        out.extend(seg.items)
        stack.extend(s for s in (seg.taken, seg.fall) if s is not None)
    return out


def _tree_size(items: list[_Item], lin_mask: int) -> int:
    """Bytes from the lowest instruction's first to the highest one's last."""
    low = min(it.lin for it in items)
    high = max(it.lin + it.b.length for it in items)
    return (high - low) & lin_mask
