"""A small AML encoder (ACPI 6.4 §20 "ACPI Machine Language Specification").

Only what pyvmm's DSDT needs: names (§20.2.2), integers and strings
(§20.2.3), buffers and packages, Name, Scope and Device (§20.2.5), and EisaId's
compressed EISA identifier (§19.6.35).  Each function returns the encoded
bytes of one term; a term list is their concatenation.
"""

from __future__ import annotations

ZERO_OP, ONE_OP, ONES_OP = 0x00, 0x01, 0xFF
BYTE_PREFIX, WORD_PREFIX, DWORD_PREFIX, STRING_PREFIX, QWORD_PREFIX = (
    0x0A, 0x0B, 0x0C, 0x0D, 0x0E)
NAME_OP, SCOPE_OP, BUFFER_OP, PACKAGE_OP = 0x08, 0x10, 0x11, 0x12
EXT_OP_PREFIX, DEVICE_OP = 0x5B, 0x82
ROOT_CHAR, PARENT_PREFIX = ord("\\"), ord("^")
DUAL_NAME_PREFIX, MULTI_NAME_PREFIX, NULL_NAME = 0x2E, 0x2F, 0x00
NAME_SEG_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789")
MAX_PKG_LENGTH = 1 << 28


def pkg_length(body_length: int) -> bytes:
    """PkgLength (§20.2.4): the length of itself plus `body_length`.  One byte
    holds up to 63 (bits 5:0); otherwise bits 7:6 of the lead byte count the
    1-3 bytes that follow, its bits 3:0 are the low nibble and each following
    byte the next 8 bits."""
    for extra in range(4):
        total = body_length + 1 + extra
        if extra == 0 and total < 0x40:
            return bytes([total])
        if extra and total < 1 << (4 + 8 * extra):
            return bytes([extra << 6 | total & 0x0F]) + (total >> 4).to_bytes(extra, "little")
    raise ValueError(f"AML package of {body_length} bytes is longer than PkgLength allows")


def _name_seg(seg: str) -> bytes:
    if not 1 <= len(seg) <= 4 or seg[0].isdigit() or not set(seg) <= NAME_SEG_CHARS:
        raise ValueError(f"not an AML NameSeg: {seg!r}")
    return seg.ljust(4, "_").encode()


def name_string(name: str) -> bytes:
    r"""NameString (§20.2.2): an optional root ('\') or parent ('^') prefix and
    dot-separated 4-character segments ("\_SB.PCI0")."""
    prefix = b""
    while name[:1] in ("\\", "^"):
        prefix += name[:1].encode()
        name = name[1:]
    segs = [_name_seg(seg) for seg in name.split(".")] if name else []
    if not segs:
        return prefix + bytes([NULL_NAME])
    if len(segs) == 1:
        return prefix + segs[0]
    if len(segs) == 2:
        return prefix + bytes([DUAL_NAME_PREFIX]) + b"".join(segs)
    return prefix + bytes([MULTI_NAME_PREFIX, len(segs)]) + b"".join(segs)


def integer(value: int) -> bytes:
    """ComputationalData (§20.2.3): the shortest encoding of an unsigned integer."""
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"AML integer out of range: {value}")
    if value in (0, 1):
        return bytes([value])  # ZeroOp, OneOp
    for prefix, size in ((BYTE_PREFIX, 1), (WORD_PREFIX, 2), (DWORD_PREFIX, 4),
                         (QWORD_PREFIX, 8)):
        if value < 1 << (8 * size):
            return bytes([prefix]) + value.to_bytes(size, "little")
    raise AssertionError("unreachable")


def string(text: str) -> bytes:
    """String (§20.2.3): ASCII characters 0x01-0x7F, NUL-terminated."""
    data = text.encode("ascii")
    if 0 in data:
        raise ValueError("an AML string cannot hold NUL")
    return bytes([STRING_PREFIX]) + data + b"\x00"


def eisa_id(text: str) -> bytes:
    """EisaId("PNP0A03") (§19.6.35): three letters in 5 bits each (A = 1) and four
    hex digits, stored big-endian as a DWord."""
    if len(text) != 7 or not text[:3].isalpha() or not text[:3].isupper():
        raise ValueError(f"not an EISA id: {text!r}")
    letters = (ord(text[0]) - 0x40) << 10 | (ord(text[1]) - 0x40) << 5 | (ord(text[2]) - 0x40)
    value = int.from_bytes(letters.to_bytes(2, "big") + int(text[3:], 16).to_bytes(2, "big"),
                           "little")
    return bytes([DWORD_PREFIX]) + value.to_bytes(4, "little")


def name(path: str, data: bytes) -> bytes:
    """DefName := NameOp NameString DataRefObject (§20.2.5.1)."""
    return bytes([NAME_OP]) + name_string(path) + data


def buffer(data: bytes) -> bytes:
    """DefBuffer := BufferOp PkgLength BufferSize ByteList (§20.2.5.4)."""
    body = integer(len(data)) + data
    return bytes([BUFFER_OP]) + pkg_length(len(body)) + body


def package(*elements: bytes) -> bytes:
    """DefPackage := PackageOp PkgLength NumElements PackageElementList (§20.2.5.4)."""
    if len(elements) > 0xFF:
        raise ValueError("a Package holds at most 255 elements (use VarPackage)")
    body = bytes([len(elements)]) + b"".join(elements)
    return bytes([PACKAGE_OP]) + pkg_length(len(body)) + body


def scope(path: str, *terms: bytes) -> bytes:
    """DefScope := ScopeOp PkgLength NameString TermList (§20.2.5.1)."""
    body = name_string(path) + b"".join(terms)
    return bytes([SCOPE_OP]) + pkg_length(len(body)) + body


def device(path: str, *terms: bytes) -> bytes:
    """DefDevice := ExtOpPrefix DeviceOp PkgLength NameString TermList (§20.2.5.2)."""
    body = name_string(path) + b"".join(terms)
    return bytes([EXT_OP_PREFIX, DEVICE_OP]) + pkg_length(len(body)) + body
