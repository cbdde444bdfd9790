"""Builders of test images (ELF32/ELF64 files, multiboot headers), written with struct.

Formats: System V gABI ch. 4-5 (ELF), Multiboot Specification 0.6.96 §3.1.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MB_MAGIC = 0x1BADB002


def mb_header(flags: int = 0, checksum: int | None = None,
              address: tuple[int, int, int, int, int] | None = None) -> bytes:
    if checksum is None:
        checksum = (-(MB_MAGIC + flags)) & 0xFFFFFFFF
    data = struct.pack("<III", MB_MAGIC, flags, checksum)
    if address is not None:
        data += struct.pack("<IIIII", *address)
    return data


@dataclass
class Seg:
    paddr: int
    data: bytes
    memsz: int | None = None
    vaddr: int | None = None
    p_type: int = 1  # PT_LOAD


def build_elf(bits: int, segs: list[Seg], entry: int, e_type: int = 2,
              machine: int | None = None, data_encoding: int = 1,
              data_offset: int = 0x1000) -> bytes:
    """An ELF executable: header, program headers, then each segment's bytes page-aligned."""
    if machine is None:
        machine = 3 if bits == 32 else 62
    ehsize, phentsize = (52, 32) if bits == 32 else (64, 56)
    phoff = ehsize
    body = b""
    offsets = []
    for seg in segs:
        offsets.append(data_offset + len(body))
        body += seg.data
        body += bytes(-len(body) % 0x1000)
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, data_encoding, 1]) + bytes(9)
    if bits == 32:
        header = ident + struct.pack("<HHIIIIIHHHHHH", e_type, machine, 1, entry, phoff, 0, 0,
                                     ehsize, phentsize, len(segs), 40, 0, 0)
    else:
        header = ident + struct.pack("<HHIQQQIHHHHHH", e_type, machine, 1, entry, phoff, 0, 0,
                                     ehsize, phentsize, len(segs), 64, 0, 0)
    phdrs = b""
    for seg, offset in zip(segs, offsets, strict=True):
        memsz = len(seg.data) if seg.memsz is None else seg.memsz
        vaddr = seg.paddr if seg.vaddr is None else seg.vaddr
        if bits == 32:
            phdrs += struct.pack("<IIIIIIII", seg.p_type, offset, vaddr, seg.paddr,
                                 len(seg.data), memsz, 5, 0x1000)
        else:
            phdrs += struct.pack("<IIQQQQQQ", seg.p_type, 5, offset, vaddr, seg.paddr,
                                 len(seg.data), memsz, 0x1000)
    head = header + phdrs
    assert len(head) <= data_offset
    return head + bytes(data_offset - len(head)) + body


CODE = b"\xb8\x78\x56\x34\x12\xf4"  # mov eax, 0x12345678; hlt
TEXT = mb_header(flags=0x3) + CODE  # page-align + memory-info requirements
ENTRY = 0x100000 + 12  # CODE follows the 12-byte header


def elf32_kernel() -> bytes:
    """Text (header + CODE) at 1 MiB; 4 bytes of data plus bss at 0x102000-0x103fff."""
    return build_elf(32, [Seg(0x100000, TEXT), Seg(0x102000, b"DATA", memsz=0x2000)], ENTRY)
