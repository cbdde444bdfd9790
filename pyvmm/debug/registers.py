"""The registers gdb sees, and the target description that names them.

One table per layout (`AMD64`, `I386`): each row is a register's name, its
width, its gdb type and feature, and how it maps onto `CpuState`.  The `g`
packet, `p`/`P`, and target.xml (GDB manual E.3 "Target Descriptions",
G.5 "i386 Features") all come from the same rows, in row order, so the
register numbers can never disagree.

x87 and SSE registers come from the FXSAVE image in `CpuState.fpu_image`
(Intel SDM Vol. 2A, FXSAVE, Table 3-53): FCW at 0, FSW at 2, the abridged
tag byte at 4, FOP at 6, FIP at 8, FCS at 12, FDP at 16, FDS at 20, MXCSR at
24, ST(i) at 32 + 16i, XMMi at 160 + 16i.  gdb's `ftag` is the full 16-bit
tag word (SDM Vol. 1 §8.1.7), rebuilt from the abridged byte and the
register contents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyvmm.cpu.state import (
    GPR_NAMES,
    MSR_KERNEL_GS_BASE,
    CpuState,
)

FXSAVE_SIZE = 512
# The image after FNINIT with MXCSR at its reset value (SDM Vol. 1 §8.1.8, §10.2.3.1).
_DEFAULT_FXSAVE = bytearray(FXSAVE_SIZE)
_DEFAULT_FXSAVE[0:2] = (0x037F).to_bytes(2, "little")
_DEFAULT_FXSAVE[24:28] = (0x1F80).to_bytes(4, "little")
_DEFAULT_FXSAVE[28:32] = (0xFFFF).to_bytes(4, "little")

CORE = "org.gnu.gdb.i386.core"
SSE = "org.gnu.gdb.i386.sse"
SEGMENTS = "org.gnu.gdb.i386.segments"
SYSTEM = "org.pyvmm.x86.system"

Getter = Callable[[CpuState], int]
Setter = Callable[[CpuState, int], None]


@dataclass(frozen=True)
class Register:
    name: str
    bits: int
    type: str
    feature: str
    get: Getter
    set: Setter
    group: str | None = None


# -- accessors -----------------------------------------------------------------
def _image(state: CpuState) -> bytes:
    return state.fpu_image if state.fpu_image is not None else bytes(_DEFAULT_FXSAVE)


def _fx(offset: int, size: int) -> tuple[Getter, Setter]:
    def get(state: CpuState) -> int:
        return int.from_bytes(_image(state)[offset:offset + size], "little")

    def set_(state: CpuState, value: int) -> None:
        image = bytearray(_image(state))
        image[offset:offset + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        state.fpu_image = bytes(image)
    return get, set_


def _tag_of(value: int) -> int:
    """The 2-bit tag of an 80-bit register value (SDM Vol. 1 §8.1.7, Figure 8-7)."""
    exponent = (value >> 64) & 0x7FFF
    significand = value & ((1 << 64) - 1)
    if exponent == 0:
        return 0b01 if significand == 0 else 0b10  # zero, or denormal (special)
    if exponent == 0x7FFF or not significand >> 63:
        return 0b10  # infinity/NaN, or an unnormal
    return 0b00


def _get_ftag(state: CpuState) -> int:
    image = _image(state)
    abridged = image[4]
    top = (int.from_bytes(image[2:4], "little") >> 11) & 7
    word = 0
    for physical in range(8):
        if not abridged >> physical & 1:
            tag = 0b11
        else:
            index = (physical - top) & 7
            tag = _tag_of(int.from_bytes(image[32 + 16 * index:42 + 16 * index], "little"))
        word |= tag << (2 * physical)
    return word


def _set_ftag(state: CpuState, value: int) -> None:
    image = bytearray(_image(state))
    image[4] = sum(1 << p for p in range(8) if (value >> (2 * p)) & 3 != 0b11)
    state.fpu_image = bytes(image)


def _gpr(index: int, bits: int) -> tuple[Getter, Setter]:
    mask = (1 << bits) - 1

    def get(state: CpuState) -> int:
        return state.gprs[index] & mask

    def set_(state: CpuState, value: int) -> None:
        state.gprs[index] = (state.gprs[index] & ~mask) | (value & mask)
    return get, set_


def _field(name: str, bits: int) -> tuple[Getter, Setter]:
    mask = (1 << bits) - 1

    def get(state: CpuState) -> int:
        return getattr(state, name) & mask

    def set_(state: CpuState, value: int) -> None:
        setattr(state, name, (getattr(state, name) & ~mask) | (value & mask))
    return get, set_


def _selector(segment: str) -> tuple[Getter, Setter]:
    def get(state: CpuState) -> int:
        return state.segments[segment].selector

    def set_(state: CpuState, value: int) -> None:
        # Only the visible part: the descriptor cache keeps what the guest loaded.
        state.segments[segment].selector = value & 0xFFFF
    return get, set_


def _segment_base(segment: str) -> tuple[Getter, Setter]:
    def get(state: CpuState) -> int:
        return state.segments[segment].base

    def set_(state: CpuState, value: int) -> None:
        state.segments[segment].base = value & ((1 << 64) - 1)
    return get, set_


def _msr(index: int) -> tuple[Getter, Setter]:
    def get(state: CpuState) -> int:
        return state.msrs.get(index, 0)

    def set_(state: CpuState, value: int) -> None:
        state.msrs[index] = value & ((1 << 64) - 1)
    return get, set_


def _row(name: str, bits: int, type_: str, feature: str,
         access: tuple[Getter, Setter], group: str | None = None) -> Register:
    return Register(name, bits, type_, feature, access[0], access[1], group)


def _x87_rows() -> list[Register]:
    rows = [_row(f"st{i}", 80, "i387_ext", CORE, _fx(32 + 16 * i, 10), "float")
            for i in range(8)]
    rows += [
        _row("fctrl", 32, "int", CORE, _fx(0, 2), "float"),
        _row("fstat", 32, "int", CORE, _fx(2, 2), "float"),
        _row("ftag", 32, "int", CORE, (_get_ftag, _set_ftag), "float"),
        _row("fiseg", 32, "int", CORE, _fx(12, 2), "float"),
        _row("fioff", 32, "int", CORE, _fx(8, 4), "float"),
        _row("foseg", 32, "int", CORE, _fx(20, 2), "float"),
        _row("fooff", 32, "int", CORE, _fx(16, 4), "float"),
        _row("fop", 32, "int", CORE, _fx(6, 2), "float"),
    ]
    return rows


def _sse_rows(count: int) -> list[Register]:
    rows = [_row(f"xmm{i}", 128, "vec128", SSE, _fx(160 + 16 * i, 16), "vector")
            for i in range(count)]
    rows.append(_row("mxcsr", 32, "i386_mxcsr", SSE, _fx(24, 4), "vector"))
    return rows


def _system_rows() -> list[Register]:
    return [_row(name, 64, "int64", SYSTEM, _field(name, 64), "system")
            for name in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer")] + [
        _row("k_gs_base", 64, "int64", SYSTEM, _msr(MSR_KERNEL_GS_BASE), "system")]


_AMD64_GPR_ORDER = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_I386_GPR_ORDER = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
_SEGMENT_ORDER = ("cs", "ss", "ds", "es", "fs", "gs")

AMD64: tuple[Register, ...] = tuple(
    [_row(name, 64, "data_ptr" if name in ("rsp", "rbp") else "int64", CORE,
          _gpr(GPR_NAMES.index(name), 64), "general") for name in _AMD64_GPR_ORDER]
    + [_row("rip", 64, "code_ptr", CORE, _field("rip", 64), "general"),
       _row("eflags", 32, "i386_eflags", CORE, _field("rflags", 32), "general")]
    + [_row(seg, 32, "int32", CORE, _selector(seg), "general") for seg in _SEGMENT_ORDER]
    + _x87_rows() + _sse_rows(16)
    + [_row("fs_base", 64, "int", SEGMENTS, _segment_base("fs"), "system"),
       _row("gs_base", 64, "int", SEGMENTS, _segment_base("gs"), "system")]
    + _system_rows())

I386: tuple[Register, ...] = tuple(
    [_row(name, 32, "data_ptr" if name in ("esp", "ebp") else "int32", CORE,
          _gpr(i, 32), "general") for i, name in enumerate(_I386_GPR_ORDER)]
    + [_row("eip", 32, "code_ptr", CORE, _field("rip", 32), "general"),
       _row("eflags", 32, "i386_eflags", CORE, _field("rflags", 32), "general")]
    + [_row(seg, 32, "int32", CORE, _selector(seg), "general") for seg in _SEGMENT_ORDER]
    + _x87_rows() + _sse_rows(8)
    + _system_rows())

LAYOUTS = {"i386:x86-64": AMD64, "i386": I386}

# gdb type definitions the features use (E.3.6 "Types"; flag bits from SDM Vol. 1
# §3.4.3 for EFLAGS and §10.2.3 for MXCSR).
_TYPES = {
    CORE: """  <flags id="i386_eflags" size="4">
    <field name="CF" start="0" end="0"/><field name="" start="1" end="1"/>
    <field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/>
    <field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/>
    <field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/>
    <field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/>
    <field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/>
    <field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/>
    <field name="VIF" start="19" end="19"/><field name="VIP" start="20" end="20"/>
    <field name="ID" start="21" end="21"/>
  </flags>
""",
    SSE: """  <vector id="v4f" type="ieee_single" count="4"/>
  <vector id="v2d" type="ieee_double" count="2"/>
  <vector id="v16i8" type="int8" count="16"/>
  <vector id="v8i16" type="int16" count="8"/>
  <vector id="v4i32" type="int32" count="4"/>
  <vector id="v2i64" type="int64" count="2"/>
  <union id="vec128">
    <field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/>
    <field name="v16_int8" type="v16i8"/><field name="v8_int16" type="v8i16"/>
    <field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/>
    <field name="uint128" type="uint128"/>
  </union>
  <flags id="i386_mxcsr" size="4">
    <field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/>
    <field name="ZE" start="2" end="2"/><field name="OE" start="3" end="3"/>
    <field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/>
    <field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/>
    <field name="DM" start="8" end="8"/><field name="ZM" start="9" end="9"/>
    <field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/>
    <field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/>
  </flags>
""",
}


def target_xml(architecture: str) -> str:
    """The target description for a layout: one <feature> per feature, in row order."""
    rows = LAYOUTS[architecture]
    parts = ['<?xml version="1.0"?>\n<!DOCTYPE target SYSTEM "gdb-target.dtd">\n<target>\n',
             f"  <architecture>{architecture}</architecture>\n"]
    feature = None
    for number, row in enumerate(rows):
        if row.feature != feature:
            if feature is not None:
                parts.append("</feature>\n")
            feature = row.feature
            parts.append(f'<feature name="{feature}">\n')
            parts.append(_TYPES.get(feature, ""))
        group = f' group="{row.group}"' if row.group else ""
        parts.append(f'  <reg name="{row.name}" bitsize="{row.bits}" type="{row.type}" '
                     f'regnum="{number}"{group}/>\n')
    parts.append("</feature>\n</target>\n")
    return "".join(parts)


def layout_for(state: CpuState, image_is_64bit: bool) -> str:
    """x86-64 registers in long mode (EFER.LMA) or for a 64-bit kernel image,
    whose first instructions are still 32-bit; i386 otherwise (GDB picks its
    register layout once per connection, so it must fit the program)."""
    from pyvmm.cpu.state import EFER_LMA

    return "i386:x86-64" if state.efer & EFER_LMA or image_is_64bit else "i386"


def encode_all(rows: tuple[Register, ...], state: CpuState) -> bytes:
    """The `g` reply: every register, little-endian, in row order."""
    return b"".join(encode_one(row, state) for row in rows)


def encode_one(row: Register, state: CpuState) -> bytes:
    return (row.get(state) & ((1 << row.bits) - 1)).to_bytes(row.bits // 8, "little").hex(
        ).encode()


def decode_into(rows: tuple[Register, ...], state: CpuState, data: bytes) -> None:
    """`G`: hex register values in row order; ValueError if the length is wrong."""
    raw = bytes.fromhex(data.decode("ascii"))
    need = sum(row.bits // 8 for row in rows)
    if len(raw) != need:
        raise ValueError(f"G packet has {len(raw)} bytes, the layout {need}")
    offset = 0
    for row in rows:
        size = row.bits // 8
        row.set(state, int.from_bytes(raw[offset:offset + size], "little"))
        offset += size
