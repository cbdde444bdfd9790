"""The interpreter's CPU: register file, segment caches, lazy flags, memory access.

Everything an instruction handler touches lives here, in flat attributes
(`regs` is a list of 16 ints, segments are parallel lists indexed ES=0 CS=1
SS=2 DS=3 FS=4 GS=5, the order of SDM Vol. 2A Table 2-2's Sreg encoding).
See CONTRACT.md in this directory for the rules handlers follow.

Memory: segment-relative accesses check the segment limit (SDM Vol. 3A
§5.3), form the linear address, and go through small per-privilege dicts
(virtual page number -> physical page base) that mirror the MMU's TLB for
pages backed by board RAM; anything else (first touch, page crossing, ROM,
MMIO) takes the slow path through `Tlb.translate`.  Writes to a physical page
that holds decoded code invalidate that code (self-modifying code).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pyvmm.cpu import fxsave
from pyvmm.cpu.state import (
    CR0_PE,
    EFER_LMA,
    FLAG_IOPL_SHIFT,
    FLAG_VM,
    SegmentState,
    TableRegister,
)
from pyvmm.engines.interp import flags as fl
from pyvmm.engines.interp import segmentation
from pyvmm.engines.interp.faults import GP, PF_FETCH, PF_WRITE, SS, CpuFault
from pyvmm.engines.interp.fpu import Fpu
from pyvmm.machine.hooks import HookKind, HookSet

ES, CS, SS_SEG, DS, FS, GS = range(6)
SEG_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")
RSP = 4

MASK64 = 0xFFFFFFFFFFFFFFFF
PAGE_MASK = ~0xFFF
_MEM_HOOKS = (HookKind.MEM_READ, HookKind.MEM_WRITE)

MODEL_8086 = "8086"
MODEL_80286 = "80286"
MODEL_X86_64 = "x86-64"
MODELS = (MODEL_8086, MODEL_80286, MODEL_X86_64)

# Linear-address width per model: the 8086 has 20 address lines (wraps at 1 MiB), the
# 80286 24 (real mode reaches 0x10FFEF with A20 on); 386+ without long mode 32.
_LIN_MASK = {MODEL_8086: 0xFFFFF, MODEL_80286: 0xFFFFFF, MODEL_X86_64: 0xFFFFFFFF}

_UNPACK = (None, None, struct.Struct("<H").unpack_from, None, struct.Struct("<I").unpack_from,
           None, None, None, struct.Struct("<Q").unpack_from)
_PACK = (None, struct.Struct("<B").pack_into, struct.Struct("<H").pack_into, None,
         struct.Struct("<I").pack_into, None, None, None, struct.Struct("<Q").pack_into)
_MASK = fl.MASK
# Adding 2^47 maps the canonical ranges (bits 63:47 all equal, 48-bit linear addresses,
# SDM Vol. 1 §3.3.7.1) onto 0 .. 2^48-1 (mod 2^64): `(lin + _CANON) >> 48 & 0xFFFF` is 0
# iff `lin` (< 2^64) is canonical.
_CANON = 1 << 47


class _IdentityTlb:
    """Stand-in used only until the MMU module is importable: no paging."""

    def __init__(self, memory: object, stats: object) -> None:
        self.width_mask = (1 << 52) - 1

    def translate(self, linear: int, access: int, user: bool) -> int:
        return linear & self.width_mask

    def set_paging(self, cr0: int, cr3: int, cr4: int, efer: int) -> None:
        pass

    def flush(self, include_global: bool = True) -> None:
        pass

    def invlpg(self, linear: int) -> None:
        pass


def _make_tlb(memory: object, stats: object) -> object:
    try:
        from pyvmm.engines.interp.mmu import Tlb  # the MMU engineer's module
    except ImportError:
        return _IdentityTlb(memory, stats)
    return Tlb(memory, stats)


class Cpu:
    """Architectural state plus the hot accessors instruction handlers call."""

    def __init__(self, memory, ports, mmio, stats, model: str = MODEL_X86_64) -> None:  # noqa: ANN001
        if model not in MODELS:
            raise ValueError(f"unknown CPU model {model!r}; choose one of {', '.join(MODELS)}")
        self.model = model
        self.is_8086 = model == MODEL_8086
        self.is_286 = model == MODEL_80286
        self.legacy = model != MODEL_X86_64
        self.memory = memory
        self.ports = ports
        self.mmio = mmio
        self.stats = stats
        self.tlb = _make_tlb(memory, stats)

        # -- registers --
        self.regs: list[int] = [0] * 16
        self.rip = 0
        self.flags = 2  # RFLAGS; status bits valid only while lf_op == LF_NONE
        self.lf_op = fl.LF_NONE
        self.lf_a = 0
        self.lf_b = 0
        self.lf_r = 0
        self.lf_size = 1
        self.segs: list[SegmentState] = [SegmentState.real_mode(0, code=(i == CS))
                                         for i in range(6)]
        self.seg_sel = [0] * 6
        self.seg_base = [0] * 6
        self.seg_lo = [0] * 6  # lowest valid offset (expand-down segments)
        self.seg_hi = [0xFFFF] * 6  # highest valid offset
        self.seg_whi = [0xFFFF] * 6  # highest writable offset (-1: segment not writable)
        self.ldtr = SegmentState(type=0x2, s=0)
        self.tr = SegmentState(type=0xB, s=0)
        self.gdtr = TableRegister()
        self.idtr = TableRegister(0, 0x3FF)
        self.cr0 = 0x10
        self.cr2 = 0
        self.cr3 = 0
        self.cr4 = 0
        self.cr8 = 0
        self.efer = 0
        self.dr = [0, 0, 0, 0, 0, 0, 0xFFFF0FF0, 0x400]
        self.apic_base = 0xFEE00900  # IA32_APIC_BASE when there is no local APIC
        # The board's local APIC for this vCPU (rdmsr/wrmsr/enabled), or None.
        self.apic = None
        self.msrs: dict[int, int] = {}
        self.tsc_offset = 0
        # Set by RDTSC / RDMSR(TSC) ("read") and WRMSR(TSC) ("write"), which end the
        # batch: the clock has not yet advanced by the batch's earlier instructions,
        # so the engine corrects the value read/written once it knows how many ran.
        self.tsc_fixup: str | None = None
        self.interrupt_shadow = False
        self.halted = False
        # x87 (pyvmm/engines/interp/fpu.py), XMM0-15 as 128-bit ints and MXCSR; the
        # engine converts them to and from CpuState's FXSAVE image.
        self.fpu = Fpu()
        self.xmm: list[int] = [0] * 16
        self.mxcsr = fxsave.MXCSR_RESET
        self.fpu_image_base = fxsave.DEFAULT_IMAGE  # reserved bytes 464-511 kept as loaded
        self.mem_hooks: HookSet | None = None  # set_mem_hooks

        # -- derived mode --
        self.cpl = 0
        self.code_bits = 16
        self.stack_mask = 0xFFFF
        self.lin_mask = _LIN_MASK[model]
        self.long64 = False

        # -- memory fast path --
        self.ram, self.ram_pages = self._find_ram(memory)
        self._rd_dicts: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self._wr_dicts: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.rd = self._rd_dicts[0]
        # Data accesses served by the page dicts above (the TLB's fast path);
        # misses are counted by the Tlb.  Fetches go through the decode cache.
        self.tlb_hits = 0
        self.wr = self._wr_dicts[0]
        # physical page number -> callbacks dropping code decoded from that page
        self.code_pages: dict[int, list[Callable[[], None]]] = {}
        # Called when the code context (CS base/size, paging, mode) may have changed.
        self.on_context_change: Callable[[], None] = lambda: None
        # Called when linear->physical mappings may have changed (decode cache flush).
        self.on_address_space_change: Callable[[], None] = lambda: None
        self.icache: dict[int, Callable[[], None]] = {}
        self.refresh_mode()

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _find_ram(memory) -> tuple[object, frozenset[int]]:  # noqa: ANN001
        """The backing whose offsets equal guest-physical addresses (the board's RAM)."""
        best = None
        for region in memory.regions:
            if region.readonly or region.offset != region.gpa:
                continue
            if best is None or region.size > best.size:
                best = region
        if best is None:
            return bytearray(0), frozenset()
        pages = set()
        for region in memory.regions:
            if region.backing is best.backing and region.offset == region.gpa \
                    and not region.readonly:
                pages.update(range(region.gpa >> 12, region.end >> 12))
        return best.backing, frozenset(pages)

    # ------------------------------------------------------------------ FPU/SSE
    def fpu_image(self) -> bytes:
        """The x87/MMX/SSE state as an FXSAVE image (pyvmm.cpu.fxsave)."""
        return self.fpu.to_image(self.xmm, self.mxcsr, self.fpu_image_base)

    def load_fpu_image(self, image: bytes) -> None:
        self.xmm, self.mxcsr = self.fpu.load_image(image)
        self.fpu_image_base = image

    # ------------------------------------------------------------------ modes
    def refresh_mode(self) -> None:
        """Recompute everything derived from CR0/EFER/CS/SS and the segment caches."""
        pe = self.cr0 & CR0_PE
        cs = self.segs[CS]
        lma = bool(self.efer & EFER_LMA)
        self.long64 = bool(pe and lma and cs.l)
        if self.long64:
            self.code_bits = 64
        elif pe and not self.flags & FLAG_VM:
            self.code_bits = 32 if cs.db else 16
        else:
            self.code_bits = 32 if (cs.db and not self.legacy) else 16
        if self.long64:
            self.stack_mask = MASK64
        else:
            self.stack_mask = 0xFFFFFFFF if self.segs[SS_SEG].db else 0xFFFF
        if self.legacy:
            self.lin_mask = _LIN_MASK[self.model]
        else:
            self.lin_mask = MASK64 if lma else 0xFFFFFFFF
        if not pe:
            self.cpl = 0
        elif self.flags & FLAG_VM:
            self.cpl = 3
        user = 1 if self.cpl == 3 else 0
        self.rd = self._rd_dicts[user]
        self.wr = self._wr_dicts[user]
        for i in range(6):
            self._refresh_segment(i)
        self.on_context_change()

    def _refresh_segment(self, i: int) -> None:
        seg = self.segs[i]
        self.seg_sel[i] = seg.selector
        if self.long64:
            self.seg_base[i] = seg.base if i >= FS else 0
            self.seg_lo[i] = 0
            self.seg_hi[i] = self.seg_whi[i] = MASK64
            return
        self.seg_base[i] = seg.base & 0xFFFFFFFF
        if self.is_8086:
            self.seg_lo[i], self.seg_hi[i], self.seg_whi[i] = 0, 0xFFFF, 0xFFFF
            return
        pe = self.cr0 & CR0_PE and not self.flags & FLAG_VM
        if pe and (seg.unusable or not seg.present) and i != CS:
            self.seg_lo[i], self.seg_hi[i] = 1, 0  # every access faults
        elif seg.s and not seg.type & 0x8 and seg.type & 0x4:
            # expand-down data segment: valid offsets are limit+1 .. 0xFFFF/0xFFFFFFFF
            self.seg_lo[i] = seg.limit + 1
            self.seg_hi[i] = 0xFFFFFFFF if seg.db else 0xFFFF
        else:
            self.seg_lo[i], self.seg_hi[i] = 0, seg.limit
        # Protected mode: code segments and read-only data are not writable (SDM Vol. 3A §5.5).
        writable = not pe or (seg.s and not seg.type & 0x8 and seg.type & 0x2)
        self.seg_whi[i] = self.seg_hi[i] if writable else -1

    def set_segment(self, i: int, seg: SegmentState) -> None:
        """Install a segment register (selector + descriptor cache)."""
        self.segs[i] = seg
        if i == CS or i == SS_SEG:
            self.refresh_mode()
        else:
            self._refresh_segment(i)

    def load_real_segment(self, i: int, selector: int) -> None:
        """A segment load in real or virtual-8086 mode: base = selector * 16 (SDM §20.1.1)."""
        selector &= 0xFFFF
        old = self.segs[i]
        if self.flags & FLAG_VM:
            seg = SegmentState(selector=selector, base=selector << 4, limit=0xFFFF,
                               type=0xB if i == CS else 0x3, dpl=3)
        else:
            # Real mode keeps the cached limit and attributes (what makes "unreal mode").
            seg = SegmentState(selector=selector, base=selector << 4, limit=old.limit,
                               type=old.type if old.s else 0x3, s=1, dpl=old.dpl,
                               present=1, db=old.db, g=old.g, l=0)
            if i == CS:
                seg.type = 0xB
        self.set_segment(i, seg)

    def load_protected_segment(self, i: int, selector: int) -> None:
        """MOV/POP/Lxs to DS-GS or SS in protected mode: the checks of segmentation.py."""
        seg = segmentation.load_segment(self.read_sys, self.write_sys, self.gdtr, self.ldtr,
                                        SEG_NAMES[i], selector, self.cpl, self.long64)
        self.set_segment(i, seg)

    def install_cs(self, seg: SegmentState, cpl: int) -> None:
        """Make `seg` (already checked, RPL = `cpl`) the code segment at privilege `cpl`."""
        self.segs[CS] = seg
        self.cpl = cpl
        self.refresh_mode()

    def null_outer_data_segments(self) -> None:
        """After a return to an outer level, ES/DS/FS/GS the new CPL may not use become null.

        SDM Vol. 2B "RET" / Vol. 2A "IRET": data or non-conforming code segments
        with DPL < CPL are loaded with a null selector.
        """
        for i in (ES, DS, FS, GS):
            seg = self.segs[i]
            if seg.unusable or not seg.s:
                continue
            conforming_code = seg.type & 0x8 and seg.type & 0x4
            if not conforming_code and seg.dpl < self.cpl:
                self.set_segment(i, segmentation.null_segment(0))

    def canonical_fault(self, seg: int) -> CpuFault:
        """#SS(0) for a stack reference, #GP(0) otherwise (SDM Vol. 3A §3.3.7.1)."""
        return CpuFault(SS if seg == SS_SEG else GP, 0)

    @property
    def user(self) -> bool:
        return self.cpl == 3

    @property
    def iopl(self) -> int:
        return (self.flags >> FLAG_IOPL_SHIFT) & 3

    def set_cpl(self, cpl: int) -> None:
        self.cpl = cpl
        self.refresh_mode()

    # ------------------------------------------------------------------ flags
    def get_flags(self) -> int:
        """The full RFLAGS value (materialises lazy status flags)."""
        return fl.materialize(self)

    def set_flags(self, value: int) -> None:
        """Replace all of RFLAGS (no privilege filtering; callers apply POPF/IRET rules)."""
        old_vm = self.flags & FLAG_VM
        self.flags = value | 2
        self.lf_op = fl.LF_NONE
        if (value & FLAG_VM) != old_vm:
            self.refresh_mode()

    def set_arith(self, bits: int) -> None:
        """Set all six status flags (CF PF AF ZF SF OF) to `bits`, eagerly."""
        self.flags = (self.flags & ~fl.ARITH_MASK) | (bits & fl.ARITH_MASK)
        self.lf_op = fl.LF_NONE

    def update_flags(self, mask: int, bits: int) -> None:
        """Change only the RFLAGS bits in `mask` to `bits` (others keep their values)."""
        self.flags = (fl.materialize(self) & ~mask) | (bits & mask)

    def get_cf(self) -> int:
        return fl.get_cf(self)

    def set_lazy(self, op: int, a: int, b: int, r: int, size: int) -> None:
        """Record a lazy flags result (see flags.py for what a/b/r mean per op)."""
        if op == fl.LF_INC or op == fl.LF_DEC:
            self.flags = (self.flags & ~fl.CF) | fl.get_cf(self)
        self.lf_op = op
        self.lf_a = a
        self.lf_b = b
        self.lf_r = r
        self.lf_size = size

    def code_context(self) -> tuple[int, int, int, int]:
        """What decoded code depends on besides its bytes: CS base and limit,
        the code size and the privilege level (a cache key for decoders)."""
        return (self.seg_base[CS], self.seg_hi[CS], self.code_bits, self.cpl)

    # ------------------------------------------------------------------ memory
    def read(self, seg: int, off: int, size: int) -> int:
        """Read `size` bytes at seg:off (off already wrapped to the address size)."""
        if off < self.seg_lo[seg] or off + size - 1 > self.seg_hi[seg]:
            return self._read_outside(seg, off, size)
        lin = (self.seg_base[seg] + off) & self.lin_mask
        page = self.rd.get(lin >> 12)
        if page is not None:
            o = lin & 0xFFF
            if o <= 4096 - size:
                self.tlb_hits += 1
                if size == 1:
                    return self.ram[page | o]
                return _UNPACK[size](self.ram, page | o)[0]
        if self.long64 and ((lin + _CANON) >> 48 & 0xFFFF
                            or (lin + size - 1 + _CANON) >> 48 & 0xFFFF):
            raise self.canonical_fault(seg)
        return self.read_lin_slow(lin, size, 0)

    def write(self, seg: int, off: int, size: int, value: int) -> None:
        """Write `size` bytes at seg:off (value is masked to the size here)."""
        if off < self.seg_lo[seg] or off + size - 1 > self.seg_whi[seg]:
            return self._write_outside(seg, off, size, value)
        lin = (self.seg_base[seg] + off) & self.lin_mask
        page = self.wr.get(lin >> 12)
        if page is not None:
            o = lin & 0xFFF
            if o <= 4096 - size:
                self.tlb_hits += 1
                _PACK[size](self.ram, page | o, value & _MASK[size])
                return
        if self.long64 and ((lin + _CANON) >> 48 & 0xFFFF
                            or (lin + size - 1 + _CANON) >> 48 & 0xFFFF):
            raise self.canonical_fault(seg)
        self.write_lin_slow(lin, size, value & _MASK[size])

    def read_rmw(self, seg: int, off: int, size: int) -> int:
        """The read half of a read-modify-write (ADD [m], XCHG, CMPXCHG...).

        The processor checks the destination for writing before it reads, so a
        not-present or read-only page faults with error-code W=1 (SDM Vol. 3A
        §4.7: "the access causing the fault was a write"): look the page up in
        the write dict, and on a miss translate with write intent.
        """
        if off < self.seg_lo[seg] or off + size - 1 > self.seg_whi[seg]:
            if self.is_8086 or off < self.seg_lo[seg] or off + size - 1 > self.seg_hi[seg]:
                return self._read_outside(seg, off, size)
            raise CpuFault(GP, 0)  # code segment or read-only data (SDM Vol. 3A §5.5)
        lin = (self.seg_base[seg] + off) & self.lin_mask
        page = self.wr.get(lin >> 12)
        if page is not None:
            o = lin & 0xFFF
            if o <= 4096 - size:
                self.tlb_hits += 1
                if size == 1:
                    return self.ram[page | o]
                return _UNPACK[size](self.ram, page | o)[0]
        if self.long64 and ((lin + _CANON) >> 48 & 0xFFFF
                            or (lin + size - 1 + _CANON) >> 48 & 0xFFFF):
            raise self.canonical_fault(seg)
        user = self.cpl == 3
        last = (lin + size - 1) & self.lin_mask
        self.tlb.translate(lin, PF_WRITE | (4 if user else 0), user)
        if last >> 12 != lin >> 12:
            self.tlb.translate(last & PAGE_MASK, PF_WRITE | (4 if user else 0), user)
        return self.read_lin_slow(lin, size, 0)

    def _limit_fault(self, seg: int) -> CpuFault:
        """#SS(0) for the stack segment, #GP(0) otherwise (SDM Vol. 3A §6.15, int 12/13).

        The 80286 in real mode raises interrupt 13 for any segment overrun (the vectors
        show it for SS-relative accesses too), and pushes no error code there.
        """
        if self.is_286:
            return CpuFault(GP, 0)
        return CpuFault(SS if seg == SS_SEG else GP, 0)

    def _read_outside(self, seg: int, off: int, size: int) -> int:
        if self.is_8086:
            # The 8086 has no limit: a word at offset 0xFFFF wraps to offset 0.
            value = 0
            for i in range(size):
                value |= self.read_lin(((self.seg_base[seg] + ((off + i) & 0xFFFF))
                                        & self.lin_mask), 1) << (8 * i)
            return value
        raise self._limit_fault(seg)

    def _write_outside(self, seg: int, off: int, size: int, value: int) -> None:
        if self.is_8086:
            for i in range(size):
                self.write_lin((self.seg_base[seg] + ((off + i) & 0xFFFF)) & self.lin_mask, 1,
                               value >> (8 * i))
            return
        if off < self.seg_lo[seg] or off + size - 1 > self.seg_hi[seg]:
            raise self._limit_fault(seg)
        seg_state = self.segs[seg]
        if seg_state.s and seg_state.type & 0x8 or not seg_state.type & 0x2:
            raise CpuFault(GP, 0)  # code segment or read-only data (SDM Vol. 3A §5.5)
        lin = (self.seg_base[seg] + off) & self.lin_mask
        self.write_lin(lin, size, value)

    def read_lin(self, lin: int, size: int) -> int:
        page = self.rd.get(lin >> 12)
        if page is not None:
            o = lin & 0xFFF
            if o <= 4096 - size:
                self.tlb_hits += 1
                if size == 1:
                    return self.ram[page | o]
                return _UNPACK[size](self.ram, page | o)[0]
        return self.read_lin_slow(lin, size, 0)

    def write_lin(self, lin: int, size: int, value: int) -> None:
        value &= _MASK[size]
        page = self.wr.get(lin >> 12)
        if page is not None:
            o = lin & 0xFFF
            if o <= 4096 - size:
                self.tlb_hits += 1
                _PACK[size](self.ram, page | o, value)
                return
        self.write_lin_slow(lin, size, value)

    def read_lin_slow(self, lin: int, size: int, access: int, user: bool | None = None) -> int:
        """Translate and read; `access` is 0 or PF_FETCH; user None = current CPL."""
        if user is None:
            user = self.cpl == 3
        value = self._read_translated(lin, size, access, user)
        if self.mem_hooks is not None and access == 0:
            self.mem_hooks.mem_read(lin, size, value)
        return value

    def _read_translated(self, lin: int, size: int, access: int, user: bool) -> int:
        if (lin & 0xFFF) + size > 4096 or (lin + size - 1) & self.lin_mask != lin + size - 1:
            value = 0
            for i in range(size):
                value |= self._read_translated((lin + i) & self.lin_mask, 1, access,
                                               user) << (8 * i)
            return value
        pa = self.tlb.translate(lin, access | (4 if user else 0), user)
        if (pa >> 12) in self.ram_pages:
            if access == 0 and user == (self.cpl == 3) and self._cacheable(lin):
                self.rd[lin >> 12] = pa & PAGE_MASK
            return int.from_bytes(self.ram[pa:pa + size], "little")
        return self.phys_read(pa, size)

    def _cacheable(self, lin: int) -> bool:
        """Whether the fast path may serve this page (no memory hook watches it)."""
        return self.mem_hooks is None or not self.mem_hooks.covers_page(_MEM_HOOKS, lin >> 12)

    def set_mem_hooks(self, hooks: HookSet | None) -> None:
        """Report data accesses to `hooks` (None: none); the fast path forgets its pages,
        so every access to a watched page takes the slow path, where hooks are called."""
        self.mem_hooks = hooks
        self._clear_fast()

    def write_lin_slow(self, lin: int, size: int, value: int, user: bool | None = None) -> None:
        if user is None:
            user = self.cpl == 3
        if self.mem_hooks is not None and not self.mem_hooks.mem_write(lin, size, value):
            return  # vetoed by a hook: memory keeps its old bytes
        self._write_translated(lin, size, value, user)

    def _write_translated(self, lin: int, size: int, value: int, user: bool) -> None:
        if (lin & 0xFFF) + size > 4096 or (lin + size - 1) & self.lin_mask != lin + size - 1:
            # Translate both pages before writing anything (a fault leaves memory unchanged).
            # The second page is checked at its first byte, the one the access reaches
            # first: a not-present second page faults with CR2 = that page's base, as the
            # processor reports it (SDM Vol. 3A §4.7: CR2 holds the linear address that
            # caused the fault), not the access's last byte.
            last = (lin + size - 1) & self.lin_mask
            self.tlb.translate(lin, PF_WRITE | (4 if user else 0), user)
            self.tlb.translate(last & PAGE_MASK, PF_WRITE | (4 if user else 0), user)
            for i in range(size):
                self._write_translated((lin + i) & self.lin_mask, 1, (value >> (8 * i)) & 0xFF,
                                       user)
            return
        pa = self.tlb.translate(lin, PF_WRITE | (4 if user else 0), user)
        ppn = pa >> 12
        if ppn in self.code_pages:
            self.invalidate_code_page(ppn)
        if ppn in self.ram_pages:
            self.ram[pa:pa + size] = value.to_bytes(size, "little")
            if user == (self.cpl == 3) and self._cacheable(lin):
                self.wr[lin >> 12] = pa & PAGE_MASK
            return
        self.phys_write(pa, size, value)

    def phys_read(self, pa: int, size: int) -> int:
        """A physical read outside the RAM fast path: ROM, other RAM, or MMIO."""
        if self.memory.is_mapped(pa, size):
            return self.memory.read_int(pa, size)
        return self.mmio.read(pa, size)

    def phys_write(self, pa: int, size: int, value: int) -> None:
        ppn = pa >> 12
        if ppn in self.code_pages:
            self.invalidate_code_page(ppn)
        if self.memory.is_mapped(pa, size):
            self.memory.write_int(pa, size, value)
        else:
            self.mmio.write(pa, size, value)

    # System (supervisor, implicit) accesses: descriptor tables, IDT, TSS (SDM Vol. 3A §4.6.1).
    def read_sys(self, lin: int, size: int) -> int:
        return self.read_lin_slow(lin & self.lin_mask, size, 0, False)

    def write_sys(self, lin: int, size: int, value: int) -> None:
        self.write_lin_slow(lin & self.lin_mask, size, value & _MASK[size], False)

    def fetch_bytes(self, lin: int, count: int) -> bytes:
        """Instruction fetch of up to `count` bytes (stops early at an unmapped page).

        One translation per page: every byte of a page has the same mapping and
        rights (SDM Vol. 3A §4.3-4.5), so the fetch is checked at each page's first
        byte it needs and RAM is copied a page piece at a time.
        """
        user = self.cpl == 3
        access = PF_FETCH | (4 if user else 0)
        mask = self.lin_mask
        out = b""
        while count > 0:
            a = lin & mask
            n = min(count, 4096 - (a & 0xFFF))  # the page end (also where `mask` wraps)
            try:
                pa = self.tlb.translate(a, access, user)
            except CpuFault:
                if not out:
                    raise
                break
            if (pa >> 12) in self.ram_pages:
                out += self.ram[pa:pa + n]
            else:
                out += bytes(self.phys_read(pa + i, 1) for i in range(n))
            lin = a + n
            count -= n
        return out

    def fetch_physical_page(self, lin: int) -> int:
        """Physical page number an instruction byte at `lin` comes from."""
        return self.tlb.translate(lin & self.lin_mask, PF_FETCH | (4 if self.cpl == 3 else 0),
                                  self.cpl == 3) >> 12

    # ------------------------------------------------------------------ paging
    def flush_tlb(self, include_global: bool = True) -> None:
        self.tlb.flush(include_global)
        self._clear_fast()
        self.on_address_space_change()

    def invlpg(self, linear: int) -> None:
        self.tlb.invlpg(linear)
        self._clear_fast()
        self.on_address_space_change()

    def paging_changed(self) -> None:
        """CR0/CR3/CR4/EFER changed: tell the TLB (it flushes as hardware does)."""
        self.tlb.set_paging(self.cr0, self.cr3, self.cr4, self.efer)
        self._clear_fast()
        self.on_address_space_change()
        self.refresh_mode()

    def _clear_fast(self) -> None:
        for d in self._rd_dicts:
            d.clear()
        for d in self._wr_dicts:
            d.clear()

    def mark_code_page(self, ppn: int, drop: Callable[[], None]) -> None:
        """Record that decoded code came from physical page `ppn`."""
        entries = self.code_pages.get(ppn)
        if entries is None:
            self.code_pages[ppn] = [drop]
            for d in self._wr_dicts:  # writes to this page must now take the slow path
                for vpn in [v for v, p in d.items() if p >> 12 == ppn]:
                    del d[vpn]
        else:
            entries.append(drop)

    def invalidate_code_page(self, ppn: int) -> None:
        entries = self.code_pages.pop(ppn, None)
        if entries:
            self.stats.count("decode", "invalidate", len(entries))
            for drop in entries:
                drop()

    # ------------------------------------------------------------------ stack
    def push(self, value: int, size: int) -> None:
        mask = self.stack_mask
        sp = (self.regs[RSP] - size) & mask
        self.write(SS_SEG, sp, size, value)
        self.regs[RSP] = (self.regs[RSP] & ~mask) | sp

    def pop(self, size: int) -> int:
        mask = self.stack_mask
        sp = self.regs[RSP] & mask
        value = self.read(SS_SEG, sp, size)
        self.regs[RSP] = (self.regs[RSP] & ~mask) | ((sp + size) & mask)
        return value

    # ------------------------------------------------------------------ I/O
    def check_io(self, port: int, size: int) -> None:
        """#GP(0) unless CPL <= IOPL or the TSS I/O bitmap allows it (SDM Vol. 1 §19.5)."""
        if not self.cr0 & CR0_PE or self.legacy:
            return
        if self.cpl <= self.iopl and not self.flags & FLAG_VM:
            return
        if not segmentation.io_bitmap_allows(self.read_sys, self.tr, port, size):
            raise CpuFault(GP, 0)

    def port_in(self, port: int, size: int) -> int:
        self.check_io(port, size)
        return self.ports.read(port & 0xFFFF, size)

    def port_out(self, port: int, size: int, value: int) -> None:
        self.check_io(port, size)
        self.ports.write(port & 0xFFFF, size, value & _MASK[size])
