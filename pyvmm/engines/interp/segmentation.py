"""Protected-mode segmentation: descriptors, segment loads, gates, TSS lookups.

Pure functions over the caller's memory accessors: `read_linear(addr, size)
-> int` and `write_linear(addr, size, value)` read and write descriptor
tables at linear addresses (implicitly supervisor accesses, SDM Vol. 3A
§5.5 "privileged" system-table accesses; the caller routes them through its
TLB).  Faults are raised as `CpuFault` with the error codes of SDM Vol. 3A
§6.13 (selector error codes, IDT bit for gates).

References: descriptor formats SDM Vol. 3A §3.4.5 (Figure 3-8) and §7.2.3
(64-bit TSS/LDT descriptors); MOV/POP to segment registers Vol. 2B "MOV",
"POP"; far transfers Vol. 2A "CALL", "JMP", Vol. 2B "RET", Vol. 2A "IRET";
gates §6.11 / §6.14.1; TSS stacks §7.2.1 / §7.7; I/O permission bitmap
Vol. 1 §19.5.2; limit checks Vol. 3A §5.3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyvmm.cpu.state import SegmentState, TableRegister
from pyvmm.engines.interp.faults import (
    CpuFault,
    gp,
    np_,
    selector_error_code,
    ss,
    ts,
)

ReadLinear = Callable[[int, int], int]
WriteLinear = Callable[[int, int, int], None]

# Selector fields (SDM Vol. 3A §3.4.2, Figure 3-6).
SEL_RPL = 0x3  # requested privilege level
SEL_TI = 0x4  # table indicator: 1 = LDT
SEL_INDEX_SHIFT = 3

# Descriptor type field bits for code/data (S=1) segments (SDM Vol. 3A Table 3-1).
TYPE_ACCESSED = 0x1
TYPE_WRITABLE = 0x2  # data: writable
TYPE_READABLE = 0x2  # code: readable
TYPE_EXPAND_DOWN = 0x4  # data: expand-down
TYPE_CONFORMING = 0x4  # code: conforming
TYPE_CODE = 0x8

# System descriptor / gate types (S=0; SDM Vol. 3A Table 3-2).
SYS_TSS16_AVAILABLE = 0x1
SYS_LDT = 0x2
SYS_TSS16_BUSY = 0x3
SYS_CALL_GATE16 = 0x4
SYS_TASK_GATE = 0x5
SYS_INT_GATE16 = 0x6
SYS_TRAP_GATE16 = 0x7
SYS_TSS_AVAILABLE = 0x9  # 32-bit TSS; the 64-bit TSS in IA-32e mode
SYS_TSS_BUSY = 0xB
SYS_CALL_GATE = 0xC  # 32-bit; 64-bit in IA-32e mode
SYS_INT_GATE = 0xE  # 32-bit; 64-bit in IA-32e mode
SYS_TRAP_GATE = 0xF  # 32-bit; 64-bit in IA-32e mode
TSS_BUSY_BIT = 0x2  # type bit that marks a TSS busy

# Gate types valid in the IDT (SDM Vol. 3A §6.11, §6.14.1).
IDT_GATE_TYPES_LEGACY = frozenset({SYS_TASK_GATE, SYS_INT_GATE16, SYS_TRAP_GATE16,
                                   SYS_INT_GATE, SYS_TRAP_GATE})
IDT_GATE_TYPES_LONG = frozenset({SYS_INT_GATE, SYS_TRAP_GATE})

# Call gates and other system descriptors a far JMP/CALL may name (Vol. 2A "JMP", "CALL").
FAR_SYSTEM_TARGETS_LEGACY = frozenset({SYS_CALL_GATE16, SYS_CALL_GATE, SYS_TASK_GATE,
                                       SYS_TSS16_AVAILABLE, SYS_TSS_AVAILABLE})
FAR_SYSTEM_TARGETS_LONG = frozenset({SYS_CALL_GATE})

# TSS offsets (SDM Vol. 3A Figures 7-2, 7-11; Vol. 1 §19.5.2).
TSS32_ESP0 = 4  # ESPn at 4 + 8n, SSn at 8 + 8n
TSS16_SP0 = 2  # SPn at 2 + 4n, SSn at 4 + 4n
TSS64_RSP0 = 4  # RSPn at 4 + 8n
TSS64_IST1 = 0x24  # ISTn at 0x24 + 8(n - 1)
TSS_IO_MAP_BASE = 0x66  # 16-bit I/O map base (32- and 64-bit TSS)

# Access byte of a descriptor (byte 5): bit 0 of the type is the accessed bit.
DESC_ACCESS_BYTE = 5

FAR_TRANSFERS = ("jmp", "call", "ret", "iret", "int")


@dataclass
class Descriptor:
    """A decoded segment or system descriptor (SDM Vol. 3A Figure 3-8).

    `limit` is byte-granular (scaled by G); `raw_limit` is the 20-bit field.
    `raw` keeps the 8 descriptor bytes (low 8 for a 16-byte descriptor) so
    callers can decode gates from it (see `gate_from_descriptor`).
    """

    base: int = 0
    limit: int = 0
    type: int = 0
    s: int = 0
    dpl: int = 0
    present: int = 0
    avl: int = 0
    l: int = 0
    db: int = 0
    g: int = 0
    raw_limit: int = 0
    raw: int = 0

    @property
    def is_code(self) -> bool:
        return bool(self.s and self.type & TYPE_CODE)

    @property
    def is_data(self) -> bool:
        return bool(self.s and not self.type & TYPE_CODE)

    @property
    def is_system(self) -> bool:
        return not self.s

    @property
    def conforming(self) -> bool:
        return self.is_code and bool(self.type & TYPE_CONFORMING)

    def encode(self) -> int:
        """The 8 descriptor bytes as a little-endian integer (base bits 0..31)."""
        return encode_descriptor(self.base & 0xFFFFFFFF, self.raw_limit, self.type, self.s,
                                 self.dpl, self.present, self.avl, self.l, self.db, self.g)


def encode_descriptor(base: int, raw_limit: int, type_: int, s: int, dpl: int, present: int,
                      avl: int = 0, l: int = 0, db: int = 0, g: int = 0) -> int:  # noqa: E741
    """Build an 8-byte segment descriptor (SDM Vol. 3A Figure 3-8)."""
    return ((raw_limit & 0xFFFF)
            | (base & 0xFFFFFF) << 16
            | (type_ & 0xF) << 40
            | (s & 1) << 44
            | (dpl & 3) << 45
            | (present & 1) << 47
            | ((raw_limit >> 16) & 0xF) << 48
            | (avl & 1) << 52
            | (l & 1) << 53
            | (db & 1) << 54
            | (g & 1) << 55
            | ((base >> 24) & 0xFF) << 56)


def parse_descriptor(raw: int) -> Descriptor:
    """Decode an 8-byte descriptor: base 31:0, 20-bit limit scaled by G, attributes."""
    raw_limit = (raw & 0xFFFF) | ((raw >> 48) & 0xF) << 16
    g = (raw >> 55) & 1
    return Descriptor(
        base=((raw >> 16) & 0xFFFFFF) | ((raw >> 56) & 0xFF) << 24,
        limit=(raw_limit << 12) | 0xFFF if g else raw_limit,
        type=(raw >> 40) & 0xF,
        s=(raw >> 44) & 1,
        dpl=(raw >> 45) & 3,
        present=(raw >> 47) & 1,
        avl=(raw >> 52) & 1,
        l=(raw >> 53) & 1,
        db=(raw >> 54) & 1,
        g=g,
        raw_limit=raw_limit,
        raw=raw & 0xFFFFFFFFFFFFFFFF,
    )


def parse_system_descriptor16(raw_lo: int, raw_hi: int) -> Descriptor:
    """Decode a 16-byte IA-32e LDT/TSS descriptor: base 63:32 in the high 8 bytes (§7.2.3)."""
    desc = parse_descriptor(raw_lo)
    desc.base |= (raw_hi & 0xFFFFFFFF) << 32
    return desc


def descriptor_to_segment(selector: int, desc: Descriptor) -> SegmentState:
    """The hidden descriptor cache loaded with `desc` (SDM Vol. 3A §3.4.3)."""
    return SegmentState(selector=selector & 0xFFFF, base=desc.base, limit=desc.limit,
                        type=desc.type, s=desc.s, dpl=desc.dpl, present=desc.present,
                        avl=desc.avl, l=desc.l, db=desc.db, g=desc.g, unusable=0)


def null_segment(selector: int, dpl: int = 0) -> SegmentState:
    """A segment register loaded with a null selector: unusable, base 0 (Intel behaviour).

    `dpl` matters only for SS in 64-bit mode, whose DPL stays the CPL.
    """
    return SegmentState(selector=selector & 0xFFFF, base=0, limit=0, type=0, s=0, dpl=dpl,
                        present=0, unusable=1)


def _error(selector: int, external: bool) -> int:
    return selector_error_code(selector, external=external)


def _descriptor_address(gdtr: TableRegister, ldtr: SegmentState, selector: int, size: int,
                        external: bool) -> int:
    """Linear address of the descriptor `selector` names; #GP(selector) past the limit."""
    offset = selector & ~0x7 & 0xFFFF
    if selector & SEL_TI:
        if ldtr.unusable or not ldtr.present or (ldtr.selector & 0xFFFC) == 0:
            raise gp(_error(selector, external))
        base, limit = ldtr.base, ldtr.limit
    else:
        base, limit = gdtr.base, gdtr.limit
    if offset + size - 1 > limit:
        raise gp(_error(selector, external))
    return base + offset


def read_descriptor(read_linear: ReadLinear, gdtr: TableRegister, ldtr: SegmentState,
                    selector: int, external: bool = False) -> int:
    """The raw 8 bytes of the descriptor `selector` names (GDT or LDT by TI).

    #GP(selector) if the descriptor lies beyond the table limit or TI=1 with
    an unusable LDTR (SDM Vol. 3A §3.5.1).
    """
    return read_linear(_descriptor_address(gdtr, ldtr, selector, 8, external), 8)


def read_descriptor16(read_linear: ReadLinear, gdtr: TableRegister, ldtr: SegmentState,
                      selector: int, external: bool = False) -> tuple[int, int]:
    """The raw 16 bytes (low, high) of an IA-32e system descriptor; limit checked on all 16."""
    address = _descriptor_address(gdtr, ldtr, selector, 16, external)
    return read_linear(address, 8), read_linear(address + 8, 8)


def _set_accessed(read_linear: ReadLinear, write_linear: WriteLinear, gdtr: TableRegister,
                  ldtr: SegmentState, selector: int, desc: Descriptor) -> None:
    """Set the descriptor's accessed bit in memory if clear (SDM Vol. 3A §3.4.5.1)."""
    if desc.type & TYPE_ACCESSED:
        return
    address = _descriptor_address(gdtr, ldtr, selector, 8, False) + DESC_ACCESS_BYTE
    write_linear(address, 1, read_linear(address, 1) | TYPE_ACCESSED)
    desc.type |= TYPE_ACCESSED
    desc.raw |= TYPE_ACCESSED << 40


def load_segment(read_linear: ReadLinear, write_linear: WriteLinear, gdtr: TableRegister,
                 ldtr: SegmentState, seg_name: str, selector: int, cpl: int,
                 long_mode: bool) -> SegmentState:
    """MOV/POP to DS, ES, FS, GS or SS in protected mode (Vol. 2B "MOV", "POP").

    `long_mode` means 64-bit mode (IA-32e with CS.L=1): there SS may be loaded
    with a null selector when CPL < 3 and RPL = CPL.  Elsewhere a null SS is
    #GP(0); a null DS-GS loads an unusable segment.  SS needs a writable data
    segment with RPL = DPL = CPL, else #GP(selector), and #SS(selector) when
    not present.  DS-GS need data or readable code; data and non-conforming
    code also need max(CPL, RPL) <= DPL; else #GP(selector); not present is
    #NP(selector).  The accessed bit is set in the descriptor.
    """
    selector &= 0xFFFF
    rpl = selector & SEL_RPL
    is_ss = seg_name == "ss"
    if (selector & 0xFFFC) == 0:
        if not is_ss:
            return null_segment(selector)
        if long_mode and cpl < 3 and rpl == cpl:
            return null_segment(selector, dpl=cpl)
        raise gp(0)
    desc = parse_descriptor(read_descriptor(read_linear, gdtr, ldtr, selector))
    error = selector & 0xFFFC
    if is_ss:
        if rpl != cpl or desc.dpl != cpl or not desc.is_data or not desc.type & TYPE_WRITABLE:
            raise gp(error)
        if not desc.present:
            raise ss(error)
    else:
        if desc.is_system or (desc.is_code and not desc.type & TYPE_READABLE):
            raise gp(error)
        if not desc.conforming and max(cpl, rpl) > desc.dpl:
            raise gp(error)
        if not desc.present:
            raise np_(error)
    _set_accessed(read_linear, write_linear, gdtr, ldtr, selector, desc)
    return descriptor_to_segment(selector, desc)


def load_code_segment(read_linear: ReadLinear, write_linear: WriteLinear, gdtr: TableRegister,
                      ldtr: SegmentState, selector: int, cpl: int, transfer: str,
                      long_mode: bool, external: bool = False,
                      ) -> tuple[SegmentState | None, Descriptor]:
    """Check a far transfer's target code segment and load it (Vol. 2A "JMP"/"CALL", ...).

    transfer: "jmp"/"call" (direct far JMP/CALL), "ret"/"iret" (the selector's
    RPL is the new CPL), "int" (the CS of an interrupt/trap gate, with
    `external` for the EXT bit).  Rules:

    - jmp/call: conforming needs DPL <= CPL; non-conforming RPL <= CPL and
      DPL = CPL.  The new CS.RPL is the CPL.  A call gate, task gate or
      available TSS (only a 64-bit call gate in IA-32e mode) is returned as
      (None, descriptor) untouched, for the caller to handle.
    - ret/iret: RPL >= CPL; conforming needs DPL <= RPL, non-conforming
      DPL = RPL.
    - int: DPL <= CPL; the new CPL is DPL for non-conforming code, else CPL.
    - In IA-32e mode a code segment with L=1 and D=1 is #GP(selector).

    Null selector -> #GP(0) (#GP(EXT) for "int"); bad type or privilege ->
    #GP(selector); not present -> #NP(selector).  Sets the accessed bit.
    """
    if transfer not in FAR_TRANSFERS:
        raise ValueError(f"unknown far transfer {transfer!r}")
    selector &= 0xFFFF
    rpl = selector & SEL_RPL
    if (selector & 0xFFFC) == 0:
        raise gp(1 if external else 0)
    desc = parse_descriptor(read_descriptor(read_linear, gdtr, ldtr, selector, external))
    error = _error(selector, external)
    if desc.is_system:
        targets = FAR_SYSTEM_TARGETS_LONG if long_mode else FAR_SYSTEM_TARGETS_LEGACY
        if transfer in ("jmp", "call") and desc.type in targets:
            return None, desc
        raise gp(error)
    if not desc.is_code:
        raise gp(error)
    conforming = desc.conforming
    if transfer in ("jmp", "call"):
        denied = desc.dpl > cpl if conforming else (rpl > cpl or desc.dpl != cpl)
        new_rpl = cpl
    elif transfer in ("ret", "iret"):
        denied = rpl < cpl or (desc.dpl > rpl if conforming else desc.dpl != rpl)
        new_rpl = rpl
    else:  # "int"
        denied = desc.dpl > cpl
        new_rpl = cpl if conforming else desc.dpl
    if denied or (long_mode and desc.l and desc.db):
        raise gp(error)
    if not desc.present:
        raise np_(error)
    _set_accessed(read_linear, write_linear, gdtr, ldtr, selector, desc)
    return descriptor_to_segment((selector & 0xFFFC) | new_rpl, desc), desc


def load_ldtr(read_linear: ReadLinear, gdtr: TableRegister, selector: int,
              long_mode: bool) -> SegmentState:
    """LLDT (Vol. 2A "LLDT"): null -> unusable LDTR; TI=1, non-LDT type -> #GP(selector);
    not present -> #NP(selector).  IA-32e mode reads the 16-byte descriptor."""
    selector &= 0xFFFF
    if (selector & 0xFFFC) == 0:
        return null_segment(selector)
    error = selector & 0xFFFC
    if selector & SEL_TI:
        raise gp(error)
    no_ldt = SegmentState(unusable=1)
    desc = _read_system(read_linear, gdtr, no_ldt, selector, long_mode)
    if not desc.is_system or desc.type != SYS_LDT:
        raise gp(error)
    if not desc.present:
        raise np_(error)
    return descriptor_to_segment(selector, desc)


def load_tr(read_linear: ReadLinear, write_linear: WriteLinear, gdtr: TableRegister,
            selector: int, long_mode: bool) -> SegmentState:
    """LTR (Vol. 2A "LTR"): needs an available TSS in the GDT (16- or 32-bit;
    only the 64-bit one in IA-32e mode); null -> #GP(0), bad -> #GP(selector),
    not present -> #NP(selector).  Marks the TSS busy in its descriptor."""
    selector &= 0xFFFF
    if (selector & 0xFFFC) == 0:
        raise gp(0)
    error = selector & 0xFFFC
    if selector & SEL_TI:
        raise gp(error)
    no_ldt = SegmentState(unusable=1)
    desc = _read_system(read_linear, gdtr, no_ldt, selector, long_mode)
    allowed = (SYS_TSS_AVAILABLE,) if long_mode else (SYS_TSS_AVAILABLE, SYS_TSS16_AVAILABLE)
    if not desc.is_system or desc.type not in allowed:
        raise gp(error)
    if not desc.present:
        raise np_(error)
    address = gdtr.base + (selector & 0xFFF8) + DESC_ACCESS_BYTE
    write_linear(address, 1, read_linear(address, 1) | TSS_BUSY_BIT)
    desc.type |= TSS_BUSY_BIT
    return descriptor_to_segment(selector, desc)


def _read_system(read_linear: ReadLinear, gdtr: TableRegister, ldtr: SegmentState,
                 selector: int, long_mode: bool) -> Descriptor:
    if not long_mode:
        return parse_descriptor(read_descriptor(read_linear, gdtr, ldtr, selector))
    lo, hi = read_descriptor16(read_linear, gdtr, ldtr, selector)
    desc = parse_system_descriptor16(lo, hi)
    if (hi >> 40) & 0x1F:  # the upper half's type field must be 0 (§7.2.3)
        raise gp(selector & 0xFFFC)
    return desc


# -- gates -------------------------------------------------------------------

@dataclass
class Gate:
    """An IDT gate or call gate (SDM Vol. 3A Figures 5-8, 6-2, 6-8).

    `type` is the 4-bit system type (SYS_INT_GATE, SYS_TRAP_GATE,
    SYS_TASK_GATE, ...); for a task gate `selector` is the TSS selector and
    `offset` is 0.  `ist` is meaningful in IA-32e mode only.
    """

    type: int
    selector: int
    offset: int
    dpl: int
    present: int
    ist: int = 0
    param_count: int = 0  # call gates: stack parameters to copy

    @property
    def is_task_gate(self) -> bool:
        return self.type == SYS_TASK_GATE

    @property
    def is_trap(self) -> bool:
        """Trap gates leave IF alone; interrupt gates clear it (§6.12.1.3)."""
        return self.type in (SYS_TRAP_GATE16, SYS_TRAP_GATE)

    @property
    def is_16bit(self) -> bool:
        return self.type in (SYS_INT_GATE16, SYS_TRAP_GATE16, SYS_CALL_GATE16)


def parse_gate(raw_lo: int, raw_hi: int = 0, long_mode: bool = False) -> Gate:
    """Decode an 8-byte gate (16-byte in IA-32e mode: offset 63:32 in the high half)."""
    type_ = (raw_lo >> 40) & 0xF
    offset = raw_lo & 0xFFFF
    if type_ not in (SYS_INT_GATE16, SYS_TRAP_GATE16, SYS_CALL_GATE16, SYS_TASK_GATE):
        offset |= ((raw_lo >> 48) & 0xFFFF) << 16
        if long_mode:
            offset |= (raw_hi & 0xFFFFFFFF) << 32
    elif type_ == SYS_TASK_GATE:
        offset = 0
    return Gate(type=type_, selector=(raw_lo >> 16) & 0xFFFF, offset=offset,
                dpl=(raw_lo >> 45) & 3, present=(raw_lo >> 47) & 1,
                ist=(raw_lo >> 32) & 0x7 if long_mode else 0,
                param_count=(raw_lo >> 32) & 0x1F if not long_mode else 0)


def read_gate(read_linear: ReadLinear, idtr: TableRegister, vector: int, long_mode: bool,
              external: bool = False, software_cpl: int | None = None) -> Gate:
    """Fetch and check IDT gate `vector` (SDM Vol. 3A §6.11, §6.14.1; Vol. 2A "INT n").

    8-byte gates in protected mode, 16-byte in IA-32e mode.  #GP(vector*8+2)
    beyond the IDT limit or for a type that is not an interrupt, trap or
    (outside IA-32e mode) task gate; for INT n / INT3 / INTO pass the CPL as
    `software_cpl` to get the gate-DPL < CPL #GP(vector*8+2) check in its
    architectural order; #NP(vector*8+2) if not present.  `external` sets the
    EXT bit (hardware interrupts and exceptions).
    """
    size = 16 if long_mode else 8
    error = selector_error_code(vector & 0xFF, external=external, idt=True)
    address = idtr.base + (vector & 0xFF) * size
    if (vector & 0xFF) * size + size - 1 > idtr.limit:
        raise gp(error)
    lo = read_linear(address, 8)
    hi = read_linear(address + 8, 8) if long_mode else 0
    gate = parse_gate(lo, hi, long_mode)
    allowed = IDT_GATE_TYPES_LONG if long_mode else IDT_GATE_TYPES_LEGACY
    if (lo >> 44) & 1 or gate.type not in allowed:
        raise gp(error)
    if software_cpl is not None and gate.dpl < software_cpl:
        raise gp(error)
    if not gate.present:
        raise np_(error)
    return gate


def gate_from_descriptor(desc: Descriptor, raw_hi: int = 0, long_mode: bool = False) -> Gate:
    """A call/task gate returned by `load_code_segment`, decoded (16-byte in IA-32e mode)."""
    return parse_gate(desc.raw, raw_hi, long_mode)


# -- TSS ---------------------------------------------------------------------

def _tss_is_16bit(tr: SegmentState) -> bool:
    return tr.type in (SYS_TSS16_AVAILABLE, SYS_TSS16_BUSY)


def tss_stack(read_linear: ReadLinear, tr: SegmentState, target_cpl: int, long_mode: bool,
              ist: int = 0, external: bool = False) -> tuple[int, int]:
    """(SS, SP) for a privilege change to `target_cpl` (SDM Vol. 3A §6.12.1, §7.7).

    32-bit TSS: ESPn at 4+8n, SSn at 8+8n; 16-bit TSS: SPn at 2+4n, SSn at
    4+4n; 64-bit TSS: RSPn at 4+8n or, for ist 1-7, ISTn at 0x24+8(n-1), and
    SS is returned as 0 (IA-32e mode loads a null SS whose RPL is the new
    CPL; the caller forms it).  #TS(TR selector) if the entry is beyond the
    TSS limit.
    """
    error = _error(tr.selector, external)
    if long_mode:
        offset = TSS64_IST1 + 8 * (ist - 1) if ist else TSS64_RSP0 + 8 * target_cpl
        if offset + 7 > tr.limit:
            raise ts(error)
        return 0, read_linear(tr.base + offset, 8)
    if _tss_is_16bit(tr):
        offset = TSS16_SP0 + 4 * target_cpl
        if offset + 3 > tr.limit:
            raise ts(error)
        return read_linear(tr.base + offset + 2, 2), read_linear(tr.base + offset, 2)
    offset = TSS32_ESP0 + 8 * target_cpl
    if offset + 5 > tr.limit:
        raise ts(error)
    return read_linear(tr.base + offset + 4, 2), read_linear(tr.base + offset, 4)


def io_bitmap_allows(read_linear: ReadLinear, tr: SegmentState, port: int, size: int,
                     long_mode: bool = False) -> bool:
    """Whether the TSS I/O permission bitmap lets CPL > IOPL code access these ports.

    SDM Vol. 1 §19.5.2: the 16-bit map base is at TSS offset 0x66 (32- and
    64-bit TSS alike, so `long_mode` changes nothing); the bits for
    port..port+size-1 must all be 0.  The processor reads two bytes of the
    map; if either lies beyond the TSS limit the access is not allowed.  A
    16-bit TSS or an unusable TR has no map: not allowed.
    """
    del long_mode  # same layout in both TSS formats
    if tr.unusable or not tr.present or tr.s or _tss_is_16bit(tr):
        return False
    if TSS_IO_MAP_BASE + 1 > tr.limit:
        return False
    map_base = read_linear(tr.base + TSS_IO_MAP_BASE, 2)
    byte = map_base + ((port & 0xFFFF) >> 3)
    if byte + 1 > tr.limit:
        return False
    bits = read_linear(tr.base + byte, 2)
    mask = ((1 << size) - 1) << (port & 7)
    return not bits & mask


# -- limit and type checks ---------------------------------------------------

def _fault(is_stack: bool) -> CpuFault:
    return ss(0) if is_stack else gp(0)


def check_limit(segment: SegmentState, offset: int, size: int, is_stack: bool = False) -> None:
    """#GP(0) (#SS(0) for the stack) unless offset..offset+size-1 lies in the segment.

    SDM Vol. 3A §5.3: expand-up segments allow 0..limit; expand-down data
    segments (type bit 2) allow limit+1..0xFFFF, or ..0xFFFFFFFF when D/B=1.
    An unusable (null) segment faults.  Not for 64-bit mode, which checks
    no limits (the caller skips it).
    """
    if segment.unusable:
        raise _fault(is_stack)
    last = offset + size - 1
    if segment.s and not segment.type & TYPE_CODE and segment.type & TYPE_EXPAND_DOWN:
        upper = 0xFFFFFFFF if segment.db else 0xFFFF
        if offset <= segment.limit or last > upper:
            raise _fault(is_stack)
    elif last > segment.limit:
        raise _fault(is_stack)


def check_access(segment: SegmentState, write: bool, is_stack: bool = False) -> None:
    """#GP(0)/#SS(0) for a write to code or read-only data, or a read of execute-only
    code (SDM Vol. 3A §5.4.1; not applied in 64-bit mode)."""
    if segment.unusable:
        raise _fault(is_stack)
    if segment.type & TYPE_CODE:
        if write or not segment.type & TYPE_READABLE:
            raise _fault(is_stack)
    elif write and not segment.type & TYPE_WRITABLE:
        raise _fault(is_stack)
