"""Decode cache: iced-x86 decodes an instruction once; its handler is cached.

Handlers are cached per *code context* (CS base, CS limit, code size, CPL)
by instruction offset, so the run loop's lookup is one dict access on
`cpu.rip`.  Every decoded instruction records the physical page(s) its bytes
came from; a guest write to such a page drops the affected entries
(self-modifying code, SDM Vol. 3A §11.6).

When the linear->physical mapping may have changed (CR3/CR0/CR4 writes,
INVLPG) the live entries are not thrown away but *parked*, keyed by (virtual
page, physical page).  The first miss on a parked virtual page translates it
(the instruction fetch would anyway) and, if it still maps the same physical
page, brings all of that page's handlers back at once.  A handler depends
only on its offset and its bytes, and the bytes of a physical page are
guarded by the write invalidation above, so this is exact — and address
spaces that map the same virtual page to different physical pages (processes)
each keep their own decoded code across CR3 switches.
"""

from __future__ import annotations

from collections.abc import Callable

import iced_x86
from iced_x86 import Code, DecoderError

from pyvmm.engines.interp import semantics
from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.cpu import CS, Cpu
from pyvmm.engines.interp.faults import GP, UD, CpuFault

MAX_INSN = 15  # longest x86 instruction (SDM Vol. 2A §2.1)
MAX_INSN_286 = 10  # the 80286 raises #UD past 10 bytes (80286 PRM §10, interrupt 6)

# Legacy prefixes on the 8086/80286 (26 2E 36 3E F0 F1 F2 F3); F1 is an alias of LOCK.
_LEGACY_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0xF0, 0xF1, 0xF2, 0xF3})
# 8086 opcode aliases, mapped to the 386 opcode that behaves the same, which iced then
# decodes (no decoding by hand): 60-6F act as Jcc 70-7F; C0/C1/C8/C9 as C2/C3/CA/CB.
_ALIAS_8086 = {**{op: op + 0x10 for op in range(0x60, 0x70)},
               0xC0: 0xC2, 0xC1: 0xC3, 0xC8: 0xCA, 0xC9: 0xCB}
# Operand-size, address-size and FS/GS prefixes do not exist on the 80286 (#UD there).
_UD_286 = frozenset({0x64, 0x65, 0x66, 0x67})


def _raise(fault: CpuFault) -> Handler:
    def handler() -> None:
        raise fault
    return handler


def _unsupported(stats, name: str) -> Handler:  # noqa: ANN001
    """#UD for an instruction with no builder, counted in stats["unsupported"] each time
    it executes (not only when it is decoded)."""
    def handler() -> None:
        stats.count("unsupported", name)
        raise CpuFault(UD)
    return handler


def legacy_alias(raw: bytes, model: str) -> bytes | None:
    """The byte string an 8086/80286 instruction behaves as (None: #UD on this model)."""
    out = bytearray(raw)
    i = 0
    while i < len(out) and out[i] in _LEGACY_PREFIXES:
        if out[i] == 0xF1:
            out[i] = 0xF0
        i += 1
    if i >= len(out):
        return bytes(out)
    op = out[i]
    if model == "80286":
        if op in _UD_286:
            return None
        return bytes(out)
    if op in _ALIAS_8086:
        out[i] = _ALIAS_8086[op]
    elif op in (0x8C, 0x8E) and i + 1 < len(out):
        out[i + 1] &= 0xDF  # 8086 MOV Sreg uses only ModRM.reg bits 0-1
    elif op in (0xC6, 0xC7) and i + 1 < len(out):
        out[i + 1] &= 0xC7  # 8086 MOV r/m, imm ignores ModRM.reg
    elif op == 0xFF and i + 1 < len(out) and (out[i + 1] >> 3) & 7 == 7:
        out[i + 1] &= 0xF7  # 8086 FF /7 behaves as FF /6 (PUSH r/m)
    elif op == 0x8F and i + 1 < len(out):
        out[i + 1] &= 0xC7  # 8086 8F ignores ModRM.reg (POP r/m)
    elif 0xD8 <= op <= 0xDF:
        # ESC: the 8086 computes the ModRM address and does nothing else.  Decode it as
        # the ModRM-equivalent NOP r/m (0F 1F /r); ESC_NOP_ADJUST drops the extra byte.
        out[i:i + 1] = b"\x0f\x1f"
    return bytes(out)


PageEntries = dict[int, Handler]  # offset -> handler, for one virtual page


class CodeContext:
    """Decoded code for one (CS base, CS limit, code size, CPL).

    `live` is what the run loop looks up (offset -> handler).  `pages` groups
    the live entries by virtual page with the physical page they came from;
    `parked` keeps entries from earlier address spaces: virtual page ->
    physical page -> entries.
    """

    def __init__(self) -> None:
        self.live: dict[int, Handler] = {}
        self.pages: dict[int, tuple[int, PageEntries]] = {}
        self.parked: dict[int, dict[int, PageEntries]] = {}

    def park(self) -> int:
        """Move every live entry to `parked`; returns how many moved."""
        moved = 0
        for vpn, (ppn, entries) in self.pages.items():
            if entries:
                self.parked.setdefault(vpn, {})[ppn] = entries
                moved += len(entries)
        self.pages.clear()
        self.live.clear()
        return moved


class DecodeCache:
    def __init__(self, cpu: Cpu, stats) -> None:  # noqa: ANN001
        self.cpu = cpu
        self.stats = stats
        self.contexts: dict[tuple[int, int, int, int], CodeContext] = {}
        self.context = CodeContext()
        self.misses = 0
        # Instrumentation: wrap(handler, linear address, length) -> the handler to cache
        # (the engine's code/block hooks); None when no such hook exists.
        self.wrap: Callable[[Handler, int, int], Handler] | None = None
        semantics.load_groups()
        cpu.icache = {}
        cpu.on_context_change = self.select_context
        cpu.on_address_space_change = self.flush
        self.select_context()

    def select_context(self) -> None:
        cpu = self.cpu
        key = cpu.code_context()
        context = self.contexts.get(key)
        if context is None:
            context = self.contexts[key] = CodeContext()
        self.context = context
        cpu.icache = context.live

    def flush(self) -> None:
        """The address space changed: park every decoded instruction (see above)."""
        parked = sum(context.park() for context in self.contexts.values())
        if parked:
            self.stats.count("decode", "parked", parked)

    def reset(self) -> None:
        """Forget all decoded code: memory may have changed behind the CPU's back
        (a state load, a loader writing guest memory directly)."""
        dropped = sum(len(c.live) + sum(len(e) for v in c.parked.values() for e in v.values())
                      for c in self.contexts.values())
        if dropped:
            self.stats.count("decode", "invalidate", dropped)
        self.contexts.clear()
        self.cpu.code_pages.clear()
        self.select_context()

    def _unpark(self, rip: int) -> Handler | None:
        """The parked handler for CS:rip if its virtual page still maps the same frame."""
        cpu = self.cpu
        context = self.context
        lin = (cpu.seg_base[CS] + rip) & cpu.lin_mask
        vpn = lin >> 12
        by_frame = context.parked.get(vpn)
        if not by_frame:
            return None
        ppn = cpu.fetch_physical_page(lin)  # the fetch's own translation (may #PF)
        entries = by_frame.pop(ppn, None)
        if not entries:
            return None
        if not by_frame:
            del context.parked[vpn]
        context.live.update(entries)
        context.pages[vpn] = (ppn, entries)
        self.stats.count("decode", "unparked", len(entries))
        return entries.get(rip)

    # ------------------------------------------------------------------
    def fetch(self, rip: int) -> tuple[bytes, int]:
        """Up to 15 instruction bytes at CS:rip and the linear address of the first."""
        cpu = self.cpu
        limit = MAX_INSN_286 + 1 if cpu.is_286 else MAX_INSN
        if cpu.code_bits == 16:
            # 16-bit IP wraps inside the segment; legacy models wrap at their bus width.
            out = bytearray()
            for i in range(limit):
                off = (rip + i) & 0xFFFF
                if off > cpu.seg_hi[CS] and not cpu.is_8086:
                    break
                lin = (cpu.seg_base[CS] + off) & cpu.lin_mask
                try:
                    out.append(cpu.read_lin_slow(lin, 1, 16))
                except CpuFault:
                    if i == 0:
                        raise
                    break
            if not out:
                raise CpuFault(GP, 0)
            return bytes(out), (cpu.seg_base[CS] + rip) & cpu.lin_mask
        if rip > cpu.seg_hi[CS] or (cpu.long64 and (rip + (1 << 47)) >> 48 & 0xFFFF):
            raise CpuFault(GP, 0)  # beyond CS's limit, or a non-canonical 64-bit RIP
        count = min(limit, cpu.seg_hi[CS] - rip + 1)
        lin = (cpu.seg_base[CS] + rip) & cpu.lin_mask
        return cpu.fetch_bytes(lin, count), lin

    def decode(self) -> Handler:
        """Decode the instruction at CS:RIP, cache and return its handler."""
        handler = self._decode()
        if self.wrap is not None:
            return self.cpu.icache.get(self.cpu.rip, handler)  # as _store wrapped it
        return handler

    def _decode(self) -> Handler:
        cpu = self.cpu
        rip = cpu.rip
        if self.context.parked and not (cpu.long64 and (rip + (1 << 47)) >> 48 & 0xFFFF):
            handler = self._unpark(rip)
            if handler is not None:
                return handler
        self.misses += 1
        raw, lin = self.fetch(rip)
        bits = cpu.code_bits
        if cpu.legacy:
            mapped = legacy_alias(raw, cpu.model)
            if mapped is None:
                handler = _raise(CpuFault(UD))
                self._store(rip, lin, 1, handler)
                return handler
            raw = mapped
        options = iced_x86.DecoderOptions.NO_INVALID_CHECK if cpu.legacy else 0
        decoder = iced_x86.Decoder(bits, raw, options, ip=rip)
        ins = decoder.decode()
        if cpu.is_8086 and b"\x0f\x1f" in raw[:ins.len] and ins.len > 2:
            next_ip = (rip + ins.len - 1) & 0xFFFF  # an aliased ESC (see legacy_alias)

            def esc(cpu: Cpu = cpu, next_ip: int = next_ip) -> None:
                cpu.rip = next_ip
            self._store(rip, lin, ins.len - 1, esc)
            return esc
        if ins.code == Code.INVALID:
            if decoder.last_error == DecoderError.NO_MORE_BYTES:
                # The instruction runs past what could be fetched: fault on the next byte.
                if bits == 16 or cpu.is_286:
                    handler = _raise(CpuFault(GP if not cpu.is_286 else UD, 0
                                              if not cpu.is_286 else None))
                    self._store(rip, lin, len(raw), handler)
                    return handler
                cpu.read_lin_slow((lin + len(raw)) & cpu.lin_mask, 1, 16)
                raise CpuFault(GP, 0)  # beyond the CS limit
            handler = _raise(CpuFault(UD))
            self._store(rip, lin, max(1, ins.len), handler)
            return handler
        if cpu.is_286 and ins.len > MAX_INSN_286:
            handler = _raise(CpuFault(GP, 0))  # the vectors show #GP (int 13) here
            self._store(rip, lin, ins.len, handler)
            return handler
        b = Insn(cpu, ins, raw[:ins.len], bits, rip)
        builder = semantics.lookup(ins.code, ins.mnemonic)
        handler = None
        if builder is not None:
            try:
                handler = builder(b)
            except NotImplementedError:
                handler = None
        if handler is None:
            name = iced_x86.Formatter(iced_x86.FormatterSyntax.INTEL).format_mnemonic(ins)
            handler = _unsupported(self.stats, name)
        self._store(rip, lin, ins.len, handler)
        return handler

    def _store(self, rip: int, lin: int, length: int, handler: Handler) -> None:
        cpu = self.cpu
        if self.wrap is not None:
            handler = self.wrap(handler, lin, length)
        context = self.context
        live = context.live
        live[rip] = handler
        first = cpu.fetch_physical_page(lin)
        last_lin = (lin + length - 1) & cpu.lin_mask
        crosses = (last_lin >> 12) != (lin >> 12)
        entries: PageEntries = {}
        if not crosses:  # parkable: it depends on one physical page only
            vpn = lin >> 12
            page = context.pages.get(vpn)
            if page is None or page[0] != first:
                page = context.pages[vpn] = (first, {})
            entries = page[1]
            entries[rip] = handler

        def drop(live: dict[int, Handler] = live, entries: PageEntries = entries,
                 rip: int = rip, handler: Handler = handler) -> None:
            if live.get(rip) is handler:
                del live[rip]
            if entries.get(rip) is handler:
                del entries[rip]

        cpu.mark_code_page(first, drop)
        if crosses:
            try:
                last = cpu.fetch_physical_page(last_lin)
            except CpuFault:
                return
            if last != first:
                cpu.mark_code_page(last, drop)
