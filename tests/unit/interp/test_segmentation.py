"""Protected-mode segmentation helpers against the SDM's rules.

Descriptor formats (SDM Vol. 3A §3.4.5, §7.2.3), MOV/POP to segment
registers (Vol. 2B "MOV"), far transfers (Vol. 2A "JMP"/"CALL", Vol. 2B
"RET"), IDT gates (§6.11, §6.14.1), TSS stacks (§7.7), the I/O permission
bitmap (Vol. 1 §19.5.2) and limit checks (§5.3).  Descriptor tables live in a
bytearray standing in for linear memory.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyvmm.cpu.state import SegmentState, TableRegister
from pyvmm.engines.interp.faults import GP, NP, SS, TS, CpuFault
from pyvmm.engines.interp.segmentation import (
    SYS_CALL_GATE,
    SYS_INT_GATE,
    SYS_INT_GATE16,
    SYS_LDT,
    SYS_TASK_GATE,
    SYS_TRAP_GATE,
    SYS_TSS16_AVAILABLE,
    SYS_TSS_AVAILABLE,
    SYS_TSS_BUSY,
    check_access,
    check_limit,
    descriptor_to_segment,
    encode_descriptor,
    gate_from_descriptor,
    io_bitmap_allows,
    load_code_segment,
    load_ldtr,
    load_segment,
    load_tr,
    parse_descriptor,
    parse_system_descriptor16,
    read_descriptor,
    read_gate,
    tss_stack,
)

GDT_BASE = 0x1000
LDT_BASE = 0x3000
IDT_BASE = 0x5000
TSS_BASE = 0x8000

CODE_RX, CODE_XO, CODE_CONF_RX = 0xA, 0x8, 0xE
DATA_RW, DATA_RO, DATA_RW_DOWN = 0x2, 0x0, 0x6


class LinearMemory:
    """A flat 64 KiB linear address space with the accessor shapes segmentation uses."""

    def __init__(self) -> None:
        self.data = bytearray(0x10000)
        self.writes: list[tuple[int, int, int]] = []

    def read(self, address: int, size: int) -> int:
        return int.from_bytes(self.data[address:address + size], "little")

    def write(self, address: int, size: int, value: int) -> None:
        self.writes.append((address, size, value))
        self.data[address:address + size] = value.to_bytes(size, "little")

    def put(self, address: int, size: int, value: int) -> None:
        self.data[address:address + size] = value.to_bytes(size, "little")


@pytest.fixture
def lin() -> LinearMemory:
    return LinearMemory()


def gdt_entry(lin: LinearMemory, index: int, type_: int, dpl: int = 0, present: int = 1,
              s: int = 1, base: int = 0, raw_limit: int = 0xFFFFF, g: int = 1, db: int = 1,
              l: int = 0, table: int = GDT_BASE) -> int:  # noqa: E741
    raw = encode_descriptor(base, raw_limit, type_, s, dpl, present, 0, l, db, g)
    lin.put(table + index * 8, 8, raw)
    return raw


GDTR = TableRegister(GDT_BASE, 0x7F)  # 16 descriptors
NO_LDT = SegmentState(unusable=1, present=0)


def fault_of(call) -> tuple[int, int | None]:
    with pytest.raises(CpuFault) as info:
        call()
    return info.value.vector, info.value.error_code


# -- descriptors ---------------------------------------------------------------

def test_parse_flat_code_and_64bit_code():
    flat = parse_descriptor(0x00CF9A000000FFFF)
    assert (flat.base, flat.limit, flat.type, flat.s, flat.dpl, flat.present) == \
        (0, 0xFFFFFFFF, 0xA, 1, 0, 1)
    assert (flat.db, flat.g, flat.l) == (1, 1, 0)
    code64 = parse_descriptor(0x00AF9A000000FFFF)
    assert (code64.l, code64.db) == (1, 0)
    user = parse_descriptor(0x0040F2123456_0FFF | (0xAB << 56))
    assert user.base == 0xAB123456 and user.limit == 0x0FFF and user.dpl == 3 and user.g == 0


@given(st.integers(0, (1 << 64) - 1))
def test_descriptor_round_trip(raw):
    desc = parse_descriptor(raw)
    assert desc.encode() == raw
    assert desc.limit == ((desc.raw_limit << 12) | 0xFFF if desc.g else desc.raw_limit)


def test_system_descriptor16_has_64bit_base():
    lo = encode_descriptor(0x89ABCDEF, 0x67, SYS_TSS_AVAILABLE, 0, 0, 1, g=0, db=0)
    desc = parse_system_descriptor16(lo, 0xFFFF8000)
    assert desc.base == 0xFFFF8000_89ABCDEF and desc.limit == 0x67 and desc.type == 9


def test_descriptor_to_segment_copies_the_cache():
    seg = descriptor_to_segment(0x23, parse_descriptor(0x00CFF2000000FFFF))
    assert (seg.selector, seg.base, seg.limit, seg.type, seg.dpl, seg.db, seg.g, seg.unusable) \
        == (0x23, 0, 0xFFFFFFFF, 2, 3, 1, 1, 0)


def test_read_descriptor_limits_and_ldt(lin):
    raw = gdt_entry(lin, 15, DATA_RW)
    assert read_descriptor(lin.read, GDTR, NO_LDT, 15 << 3) == raw
    assert fault_of(lambda: read_descriptor(lin.read, GDTR, NO_LDT, (16 << 3) | 3)) == (GP, 0x80)
    # TI=1 with no LDT, then with one
    assert fault_of(lambda: read_descriptor(lin.read, GDTR, NO_LDT, 0x0C)) == (GP, 0x0C)
    ldt_raw = gdt_entry(lin, 1, DATA_RO, table=LDT_BASE)
    ldtr = SegmentState(selector=0x40, base=LDT_BASE, limit=0xF, type=SYS_LDT, s=0)
    assert read_descriptor(lin.read, GDTR, ldtr, 0x0F) == ldt_raw
    assert fault_of(lambda: read_descriptor(lin.read, GDTR, ldtr, 0x14)) == (GP, 0x14)


# -- load_segment (MOV/POP to DS/ES/FS/GS/SS) ------------------------------------

def load(lin, seg, selector, cpl, long_mode=False):
    return load_segment(lin.read, lin.write, GDTR, NO_LDT, seg, selector, cpl, long_mode)


def test_load_data_segment_sets_accessed(lin):
    gdt_entry(lin, 2, DATA_RW)
    seg = load(lin, "ds", 0x10, 0)
    assert seg.base == 0 and seg.limit == 0xFFFFFFFF and seg.type == DATA_RW | 1
    assert lin.data[GDT_BASE + 2 * 8 + 5] & 1
    lin.writes.clear()
    load(lin, "es", 0x10, 0)
    assert lin.writes == []  # already accessed: no second write


def test_null_selectors(lin):
    assert load(lin, "ds", 0x0003, 3).unusable == 1
    assert fault_of(lambda: load(lin, "ss", 0, 0)) == (GP, 0)
    # 64-bit mode: a null SS is allowed at CPL < 3 with RPL = CPL, keeping DPL = CPL.
    seg = load(lin, "ss", 0x0001, 1, long_mode=True)
    assert seg.unusable == 1 and seg.dpl == 1
    assert fault_of(lambda: load(lin, "ss", 0x0003, 3, long_mode=True)) == (GP, 0)
    assert fault_of(lambda: load(lin, "ss", 0x0000, 1, long_mode=True)) == (GP, 0)


@pytest.mark.parametrize("type_, dpl, present, selector, cpl, fault", [
    (DATA_RW, 0, 1, 0x13, 0, (GP, 0x10)),  # RPL != CPL
    (DATA_RW, 3, 1, 0x10, 0, (GP, 0x10)),  # DPL != CPL
    (DATA_RO, 0, 1, 0x10, 0, (GP, 0x10)),  # not writable
    (CODE_RX, 0, 1, 0x10, 0, (GP, 0x10)),  # code
    (DATA_RW, 0, 0, 0x10, 0, (SS, 0x10)),  # not present: #SS
    (DATA_RW, 3, 1, 0x13, 3, None),
])
def test_ss_rules(lin, type_, dpl, present, selector, cpl, fault):
    gdt_entry(lin, 2, type_, dpl=dpl, present=present)
    if fault is None:
        assert load(lin, "ss", selector, cpl).dpl == cpl
    else:
        assert fault_of(lambda: load(lin, "ss", selector, cpl)) == fault


@pytest.mark.parametrize("type_, dpl, present, s, selector, cpl, fault", [
    (CODE_XO, 0, 1, 1, 0x10, 0, (GP, 0x10)),  # execute-only code
    (CODE_RX, 0, 1, 1, 0x10, 0, None),  # readable code is fine
    (DATA_RW, 0, 1, 1, 0x13, 3, (GP, 0x10)),  # CPL 3 > DPL 0
    (DATA_RW, 2, 1, 1, 0x13, 0, (GP, 0x10)),  # RPL 3 > DPL 2
    (DATA_RW, 2, 1, 1, 0x12, 2, None),
    (CODE_CONF_RX, 0, 1, 1, 0x13, 3, None),  # conforming code skips the privilege check
    (CODE_RX, 0, 1, 1, 0x13, 3, (GP, 0x10)),  # non-conforming code does not
    (DATA_RW, 3, 0, 1, 0x13, 3, (NP, 0x10)),  # not present: #NP
    (SYS_LDT, 3, 1, 0, 0x13, 3, (GP, 0x10)),  # system descriptor
])
def test_data_segment_rules(lin, type_, dpl, present, s, selector, cpl, fault):
    gdt_entry(lin, 2, type_, dpl=dpl, present=present, s=s)
    if fault is None:
        assert load(lin, "fs", selector, cpl).selector == selector
    else:
        assert fault_of(lambda: load(lin, "gs", selector, cpl)) == fault


def test_load_beyond_gdt_limit_and_ldt_error_code(lin):
    assert fault_of(lambda: load(lin, "ds", 0x83, 3)) == (GP, 0x80)
    ldtr = SegmentState(selector=0x40, base=LDT_BASE, limit=0x17, type=SYS_LDT, s=0)
    gdt_entry(lin, 2, DATA_RW, dpl=0, table=LDT_BASE)
    with pytest.raises(CpuFault) as info:
        load_segment(lin.read, lin.write, GDTR, ldtr, "ds", 0x17, 3, False)
    assert (info.value.vector, info.value.error_code) == (GP, 0x14)  # TI bit kept, RPL dropped


# -- far transfers ------------------------------------------------------------------

def far(lin, selector, cpl, transfer, long_mode=False, external=False):
    return load_code_segment(lin.read, lin.write, GDTR, NO_LDT, selector, cpl, transfer,
                             long_mode, external=external)


@pytest.mark.parametrize("type_, dpl, selector, cpl, transfer, result", [
    (CODE_RX, 0, 0x08, 0, "jmp", 0x08),
    (CODE_RX, 0, 0x08, 3, "call", (GP, 0x08)),  # non-conforming: DPL must equal CPL
    (CODE_RX, 0, 0x0B, 0, "jmp", (GP, 0x08)),  # RPL > CPL
    (CODE_CONF_RX, 0, 0x08, 3, "call", 0x0B),  # conforming: DPL <= CPL, CPL kept
    (CODE_CONF_RX, 3, 0x08, 0, "jmp", (GP, 0x08)),  # conforming DPL > CPL
    (DATA_RW, 0, 0x08, 0, "jmp", (GP, 0x08)),  # not code
    (CODE_RX, 3, 0x0B, 0, "ret", 0x0B),  # return to outer ring: RPL is the new CPL
    (CODE_RX, 0, 0x08, 3, "ret", (GP, 0x08)),  # RPL < CPL
    (CODE_RX, 0, 0x0B, 0, "iret", (GP, 0x08)),  # non-conforming DPL != RPL
    (CODE_CONF_RX, 0, 0x0B, 0, "iret", 0x0B),  # conforming DPL <= RPL
    (CODE_RX, 0, 0x08, 3, "int", 0x08),  # interrupt to ring 0: new CPL = DPL
    (CODE_CONF_RX, 0, 0x08, 3, "int", 0x0B),  # conforming: CPL unchanged
    (CODE_RX, 3, 0x08, 0, "int", (GP, 0x08)),  # DPL > CPL
])
def test_code_segment_rules(lin, type_, dpl, selector, cpl, transfer, result):
    gdt_entry(lin, 1, type_, dpl=dpl)
    if isinstance(result, tuple):
        assert fault_of(lambda: far(lin, selector, cpl, transfer)) == result
    else:
        seg, desc = far(lin, selector, cpl, transfer)
        assert seg.selector == result and seg.dpl == dpl and desc.type & 1
        assert lin.data[GDT_BASE + 8 + 5] & 1  # accessed


def test_code_segment_not_present_null_and_long_mode_ld(lin):
    gdt_entry(lin, 1, CODE_RX, present=0)
    assert fault_of(lambda: far(lin, 0x08, 0, "jmp")) == (NP, 0x08)
    assert fault_of(lambda: far(lin, 0x08, 0, "int", external=True)) == (NP, 0x09)
    assert fault_of(lambda: far(lin, 0x00, 0, "call")) == (GP, 0)
    assert fault_of(lambda: far(lin, 0x00, 0, "int", external=True)) == (GP, 1)
    gdt_entry(lin, 1, CODE_RX, l=1, db=1)
    assert fault_of(lambda: far(lin, 0x08, 0, "jmp", long_mode=True)) == (GP, 0x08)
    gdt_entry(lin, 1, CODE_RX, l=1, db=0)
    assert far(lin, 0x08, 0, "jmp", long_mode=True)[0].l == 1


def test_call_gate_returned_for_the_caller(lin):
    # 32-bit call gate: selector 0x08, offset 0x12345678, DPL 3, 2 parameters.
    raw = (0x5678 | 0x08 << 16 | 2 << 32 | SYS_CALL_GATE << 40 | 3 << 45 | 1 << 47
           | 0x1234 << 48)
    lin.put(GDT_BASE + 3 * 8, 8, raw)
    seg, desc = far(lin, 0x1B, 3, "call")
    assert seg is None and desc.type == SYS_CALL_GATE and desc.raw == raw
    gate = gate_from_descriptor(desc)
    assert (gate.selector, gate.offset, gate.dpl, gate.param_count) == (0x08, 0x12345678, 3, 2)
    assert fault_of(lambda: far(lin, 0x1B, 3, "ret")) == (GP, 0x18)
    gdt_entry(lin, 3, SYS_LDT, s=0)
    assert fault_of(lambda: far(lin, 0x18, 0, "jmp")) == (GP, 0x18)


# -- IDT gates ------------------------------------------------------------------------

def put_gate(lin, vector, type_, selector, offset, dpl=0, present=1, ist=0, long_mode=False):
    size = 16 if long_mode else 8
    lo = ((offset & 0xFFFF) | selector << 16 | ist << 32 | type_ << 40 | dpl << 45
          | present << 47 | ((offset >> 16) & 0xFFFF) << 48)
    lin.put(IDT_BASE + vector * size, 8, lo)
    if long_mode:
        lin.put(IDT_BASE + vector * size + 8, 8, offset >> 32)


def test_read_gate_protected_mode(lin):
    put_gate(lin, 0x21, SYS_INT_GATE, 0x08, 0xC0101234)
    put_gate(lin, 0x22, SYS_INT_GATE16, 0x08, 0x5678)
    idtr = TableRegister(IDT_BASE, 0x22 * 8 + 7)
    gate = read_gate(lin.read, idtr, 0x21, False)
    assert (gate.type, gate.selector, gate.offset, gate.is_trap) == \
        (SYS_INT_GATE, 0x08, 0xC0101234, False)
    assert read_gate(lin.read, idtr, 0x22, False).offset == 0x5678
    assert fault_of(lambda: read_gate(lin.read, idtr, 0x23, False)) == (GP, 0x23 * 8 + 2)
    assert fault_of(lambda: read_gate(lin.read, idtr, 0x23, False, external=True)) == \
        (GP, 0x23 * 8 + 3)
    put_gate(lin, 0x20, SYS_TASK_GATE, 0x28, 0)
    assert read_gate(lin.read, idtr, 0x20, False).is_task_gate


def test_read_gate_long_mode(lin):
    put_gate(lin, 14, SYS_TRAP_GATE, 0x10, 0xFFFFFFFF_80001234, dpl=0, ist=2, long_mode=True)
    idtr = TableRegister(IDT_BASE, 16 * 16 - 1)
    gate = read_gate(lin.read, idtr, 14, True)
    assert (gate.offset, gate.ist, gate.selector, gate.is_trap) == \
        (0xFFFFFFFF_80001234, 2, 0x10, True)
    assert fault_of(lambda: read_gate(lin.read, idtr, 16, True)) == (GP, 16 * 8 + 2)
    put_gate(lin, 5, SYS_TASK_GATE, 0x28, 0, long_mode=True)  # no task gates in IA-32e mode
    assert fault_of(lambda: read_gate(lin.read, idtr, 5, True)) == (GP, 5 * 8 + 2)


def test_gate_type_dpl_and_present_checks(lin):
    idtr = TableRegister(IDT_BASE, 0x7FF)
    put_gate(lin, 0x30, SYS_CALL_GATE, 0x08, 0x1000)  # a call gate is not an IDT gate
    assert fault_of(lambda: read_gate(lin.read, idtr, 0x30, False)) == (GP, 0x30 * 8 + 2)
    put_gate(lin, 0x80, SYS_INT_GATE, 0x08, 0x1000, dpl=0, present=0)
    # INT n from ring 3 through a DPL-0 gate: the DPL check comes before the present check.
    assert fault_of(lambda: read_gate(lin.read, idtr, 0x80, False, software_cpl=3)) == \
        (GP, 0x80 * 8 + 2)
    assert fault_of(lambda: read_gate(lin.read, idtr, 0x80, False)) == (NP, 0x80 * 8 + 2)


# -- TSS ------------------------------------------------------------------------------

def test_tss_stacks(lin):
    tr32 = SegmentState(selector=0x28, base=TSS_BASE, limit=0x67, type=SYS_TSS_BUSY, s=0)
    lin.put(TSS_BASE + 4, 4, 0x0009F000)  # ESP0
    lin.put(TSS_BASE + 8, 2, 0x10)  # SS0
    lin.put(TSS_BASE + 4 + 16, 4, 0x7000)  # ESP2
    lin.put(TSS_BASE + 8 + 16, 2, 0x2A)  # SS2
    assert tss_stack(lin.read, tr32, 0, False) == (0x10, 0x9F000)
    assert tss_stack(lin.read, tr32, 2, False) == (0x2A, 0x7000)
    short = SegmentState(selector=0x28, base=TSS_BASE, limit=0x0B, type=SYS_TSS_BUSY, s=0)
    assert tss_stack(lin.read, short, 0, False) == (0x10, 0x9F000)  # needs bytes 4..9 only
    assert fault_of(lambda: tss_stack(lin.read, short, 1, False)) == (TS, 0x28)

    tr16 = SegmentState(selector=0x30, base=TSS_BASE, limit=0x2B, type=3, s=0)
    lin.put(TSS_BASE + 2 + 4, 2, 0x1234)  # SP1
    lin.put(TSS_BASE + 4 + 4, 2, 0x0019)  # SS1
    assert tss_stack(lin.read, tr16, 1, False) == (0x19, 0x1234)

    tr64 = SegmentState(selector=0x40, base=TSS_BASE, limit=0x67, type=SYS_TSS_BUSY, s=0)
    lin.put(TSS_BASE + 4, 8, 0xFFFF8000_0009F000)  # RSP0
    lin.put(TSS_BASE + 0x24 + 8 * 2, 8, 0xFFFF8000_00123000)  # IST3
    assert tss_stack(lin.read, tr64, 0, True) == (0, 0xFFFF8000_0009F000)
    assert tss_stack(lin.read, tr64, 0, True, ist=3) == (0, 0xFFFF8000_00123000)
    tr64.limit = 0x33
    assert fault_of(lambda: tss_stack(lin.read, tr64, 0, True, ist=3)) == (TS, 0x40)
    assert fault_of(lambda: tss_stack(lin.read, tr64, 0, True, ist=3, external=True)) == \
        (TS, 0x41)


def test_io_bitmap(lin):
    tr = SegmentState(selector=0x28, base=TSS_BASE, limit=0x68 + 0x2000, type=SYS_TSS_BUSY, s=0)
    lin.put(TSS_BASE + 0x66, 2, 0x68)
    lin.put(TSS_BASE + 0x68 + (0x3F8 >> 3), 1, 0xFE)  # ports 0x3F9-0x3FF denied, 0x3F8 allowed
    assert io_bitmap_allows(lin.read, tr, 0x3F8, 1)
    assert not io_bitmap_allows(lin.read, tr, 0x3F8, 2)  # 0x3F9 is denied
    assert not io_bitmap_allows(lin.read, tr, 0x3F9, 1)
    assert io_bitmap_allows(lin.read, tr, 0x60, 4)
    lin.put(TSS_BASE + 0x68 + (0x400 >> 3), 1, 0x01)  # port 0x400 denied
    assert not io_bitmap_allows(lin.read, tr, 0x3FF, 2)  # spans a byte boundary
    # The two bytes read must lie within the TSS limit.
    tr.limit = 0x68 + (0x1000 >> 3)
    assert io_bitmap_allows(lin.read, tr, 0xFFF, 1)
    assert not io_bitmap_allows(lin.read, tr, 0x1000, 1)
    # Map base beyond the limit: no port is accessible.
    lin.put(TSS_BASE + 0x66, 2, 0xFFFF)
    assert not io_bitmap_allows(lin.read, tr, 0x60, 1)
    assert not io_bitmap_allows(lin.read, SegmentState(type=SYS_TSS16_AVAILABLE, s=0), 0x60, 1)


def test_load_tr_marks_busy_and_ldtr(lin):
    gdt_entry(lin, 5, SYS_TSS_AVAILABLE, s=0, base=TSS_BASE, raw_limit=0x67, g=0, db=0)
    tr = load_tr(lin.read, lin.write, GDTR, 0x28, False)
    assert tr.type == SYS_TSS_BUSY and tr.base == TSS_BASE and tr.limit == 0x67
    assert parse_descriptor(lin.read(GDT_BASE + 0x28, 8)).type == SYS_TSS_BUSY
    assert fault_of(lambda: load_tr(lin.read, lin.write, GDTR, 0x28, False)) == (GP, 0x28)
    assert fault_of(lambda: load_tr(lin.read, lin.write, GDTR, 0, False)) == (GP, 0)
    # 64-bit: 16-byte descriptor with base 63:32 in the next slot.
    gdt_entry(lin, 6, SYS_TSS_AVAILABLE, s=0, base=0x00123000, raw_limit=0x67, g=0, db=0)
    lin.put(GDT_BASE + 7 * 8, 8, 0xFFFF8000)
    assert load_tr(lin.read, lin.write, GDTR, 0x30, True).base == 0xFFFF8000_00123000
    gdt_entry(lin, 8, SYS_LDT, s=0, base=LDT_BASE, raw_limit=0xFF, g=0, db=0)
    assert load_ldtr(lin.read, GDTR, 0x40, False).base == LDT_BASE
    assert load_ldtr(lin.read, GDTR, 0, False).unusable == 1
    assert fault_of(lambda: load_ldtr(lin.read, GDTR, 0x28, False)) == (GP, 0x28)


# -- limits -----------------------------------------------------------------------------

def test_expand_up_limit():
    seg = SegmentState(limit=0xFFFF, type=DATA_RW)
    check_limit(seg, 0xFFFE, 2)
    assert fault_of(lambda: check_limit(seg, 0xFFFF, 2)) == (GP, 0)
    assert fault_of(lambda: check_limit(seg, 0x10000, 1, is_stack=True)) == (SS, 0)


def test_expand_down_limits():
    seg16 = SegmentState(limit=0x0FFF, type=DATA_RW_DOWN, db=0)
    check_limit(seg16, 0x1000, 4)
    check_limit(seg16, 0xFFFE, 2)
    assert fault_of(lambda: check_limit(seg16, 0x0FFF, 1)) == (GP, 0)
    assert fault_of(lambda: check_limit(seg16, 0xFFFF, 2, is_stack=True)) == (SS, 0)
    seg32 = SegmentState(limit=0x0FFF, type=DATA_RW_DOWN, db=1)
    check_limit(seg32, 0xFFFFFFFC, 4)
    check_limit(seg32, 0x10000, 4)
    assert fault_of(lambda: check_limit(seg32, 0xFFFFFFFD, 4)) == (GP, 0)
    # Bit 2 of a code segment's type is "conforming", not expand-down.
    code = SegmentState(limit=0x0FFF, type=CODE_CONF_RX)
    check_limit(code, 0x0FFC, 4)


def test_unusable_segment_and_access_types():
    assert fault_of(lambda: check_limit(SegmentState(unusable=1), 0, 1)) == (GP, 0)
    check_access(SegmentState(type=CODE_RX), write=False)
    assert fault_of(lambda: check_access(SegmentState(type=CODE_RX), write=True)) == (GP, 0)
    assert fault_of(lambda: check_access(SegmentState(type=CODE_XO), write=False)) == (GP, 0)
    assert fault_of(lambda: check_access(SegmentState(type=DATA_RO), write=True,
                                         is_stack=True)) == (SS, 0)
