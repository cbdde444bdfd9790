"""ACPI resource descriptors (ACPI 6.4 §6.4 "Resource Data Types for ACPI").

What a PCI host bridge's _CRS needs: the bus-number, I/O and memory windows
it forwards to PCI (Word/DWord Address Space Descriptors, §6.4.3.5.2-3), the
configuration ports it decodes itself (I/O Port Descriptor, §6.4.2.5) and
the End Tag (§6.4.2.9).  `template` wraps descriptors into the AML Buffer a
ResourceTemplate() compiles to.
"""

from __future__ import annotations

import struct

from pyvmm.firmware import aml

# Large items' tags (§6.4.3): bit 7 set, then the item name.
DWORD_ADDRESS_SPACE, WORD_ADDRESS_SPACE = 0x87, 0x88
# Small items' tags (§6.4.2): name << 3 | length.
IO_PORT = 0x47  # name 0x08, length 7
END_TAG = 0x79  # name 0x0F, length 1
# Address space descriptors (§6.4.3.5, Table 6.44): resource type.
SPACE_MEMORY, SPACE_IO, SPACE_BUS = 0, 1, 2
# General flags: _MIF (bit 2) and _MAF (bit 3) fixed; bit 0 clear = a bridge that
# produces the range for its children (ResourceProducer); _DEC (bit 1) clear = positive decode.
FIXED_PRODUCER = 0x0C
IO_RANGE_ENTIRE = 0x03  # I/O type-specific flags _RNG: ISA and non-ISA ranges (Table 6.49)
MEMORY_READ_WRITE = 0x01  # memory type-specific flags _RW: read-write, non-cacheable (Table 6.48)
IO_DECODE_16 = 0x01  # I/O Port Descriptor: decodes all 16 address bits


def word_space(space: int, low: int, high: int, specific: int = 0) -> bytes:
    """Word Address Space Descriptor (§6.4.3.5.3): [low, high], fixed, translation 0."""
    body = struct.pack("<BBBHHHHH", space, FIXED_PRODUCER, specific, 0, low, high, 0,
                       high - low + 1)
    return struct.pack("<BH", WORD_ADDRESS_SPACE, len(body)) + body


def dword_memory(low: int, high: int) -> bytes:
    """DWord Address Space Descriptor (§6.4.3.5.2) for memory [low, high]."""
    body = struct.pack("<BBBIIIII", SPACE_MEMORY, FIXED_PRODUCER, MEMORY_READ_WRITE, 0,
                       low, high, 0, high - low + 1)
    return struct.pack("<BH", DWORD_ADDRESS_SPACE, len(body)) + body


def io_port(base: int, length: int) -> bytes:
    """I/O Port Descriptor (§6.4.2.5): `length` ports at a fixed `base`."""
    return struct.pack("<BBHHBB", IO_PORT, IO_DECODE_16, base, base, 1, length)


def template(*descriptors: bytes) -> bytes:
    """The descriptors and an End Tag, as the AML Buffer of a ResourceTemplate.
    A checksum byte of 0 means "the checksum is valid" (§6.4.2.9)."""
    return aml.buffer(b"".join(descriptors) + bytes([END_TAG, 0]))
