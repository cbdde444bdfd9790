"""Reading the loadable segments of a little-endian x86 / x86-64 ELF executable.

Only what a boot loader needs: the file header, the program header table and
its PT_LOAD entries (System V ABI, "ELF-64 Object File Format" and the
generic ABI chapter 4 "ELF Header" / chapter 5 "Program Header").  Every
offset and size read from the file is checked, so a truncated or malformed
file fails with an `ImageError` naming the file offset, never an IndexError
or struct.error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pyvmm.errors import ImageError

ELF_MAGIC = b"\x7fELF"  # e_ident[EI_MAG0..EI_MAG3]
EI_CLASS = 4  # e_ident index: 1 = ELFCLASS32, 2 = ELFCLASS64
EI_DATA = 5  # e_ident index: 1 = ELFDATA2LSB (little-endian)
EI_VERSION = 6  # e_ident index: must be EV_CURRENT
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ET_EXEC = 2  # e_type: executable file
EM_386 = 3  # e_machine: Intel 80386
EM_X86_64 = 62  # e_machine: AMD x86-64
PT_LOAD = 1  # p_type: loadable segment
PT_NOTE = 4  # p_type: auxiliary information (gABI "Note Section")
PN_XNUM = 0xFFFF  # e_phnum escape: real count in section header 0 (unsupported here)


@dataclass(frozen=True)
class _ElfClass:
    """Per-class struct layouts; fields are unpacked into the same order for both."""

    bits: int
    machine: int
    machine_name: str
    header: struct.Struct  # e_ident..e_shstrndx
    phdr: struct.Struct
    # Order of (p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz) in `phdr`.
    phdr_fields: tuple[int, ...]


_CLASSES: dict[int, _ElfClass] = {
    ELFCLASS32: _ElfClass(32, EM_386, "EM_386", struct.Struct("<16sHHIIIIIHHHHHH"),
                          # p_type p_offset p_vaddr p_paddr p_filesz p_memsz p_flags p_align
                          struct.Struct("<IIIIIIII"), (0, 1, 2, 3, 4, 5)),
    ELFCLASS64: _ElfClass(64, EM_X86_64, "EM_X86_64", struct.Struct("<16sHHIQQQIHHHHHH"),
                          # p_type p_flags p_offset p_vaddr p_paddr p_filesz p_memsz p_align
                          struct.Struct("<IIQQQQQQ"), (0, 2, 3, 4, 5, 6)),
}


@dataclass(frozen=True)
class ElfSegment:
    """One PT_LOAD program header."""

    index: int  # position in the program header table
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int

    def data(self, image: bytes) -> bytes:
        return image[self.offset:self.offset + self.filesz]


@dataclass(frozen=True)
class ElfImage:
    bits: int  # 32 or 64
    entry: int  # e_entry, as written in the file (a virtual address)
    segments: tuple[ElfSegment, ...]  # the PT_LOAD entries, in table order
    note_owners: frozenset[str] = frozenset()  # the owner names of the PT_NOTE entries' notes

    def physical_entry(self) -> int:
        """e_entry translated through the PT_LOAD segment whose vaddr range holds it.

        For a kernel linked at a virtual address different from its load
        address (p_vaddr != p_paddr), this is where the entry instruction
        actually lands in physical memory; GRUB 2's multiboot loader makes the
        same translation.  If no segment's vaddr range holds e_entry, e_entry
        is taken as physical.
        """
        for segment in self.segments:
            if segment.vaddr <= self.entry < segment.vaddr + segment.memsz:
                return self.entry - segment.vaddr + segment.paddr
        return self.entry


def is_elf(image: bytes) -> bool:
    return image[:len(ELF_MAGIC)] == ELF_MAGIC


def parse_elf(image: bytes) -> ElfImage:
    """Parse the header and PT_LOAD entries of an x86 (ELF32) or x86-64 (ELF64) executable."""
    if not is_elf(image):
        raise ImageError("not an ELF file: no 0x7f 'ELF' magic at file offset 0")
    if len(image) <= EI_VERSION:
        raise ImageError(f"ELF header truncated: file is {len(image)} bytes")
    layout = _CLASSES.get(image[EI_CLASS])
    if layout is None:
        raise ImageError(f"ELF class {image[EI_CLASS]} at file offset {EI_CLASS:#x} is neither "
                         "ELFCLASS32 (1) nor ELFCLASS64 (2)")
    if len(image) < layout.header.size:
        raise ImageError(f"ELF{layout.bits} header truncated: file is {len(image)} bytes, "
                         f"the header needs {layout.header.size}")
    if image[EI_DATA] != ELFDATA2LSB:
        raise ImageError(f"ELF data encoding {image[EI_DATA]} at file offset {EI_DATA:#x} "
                         "is not little-endian (ELFDATA2LSB = 1)")
    if image[EI_VERSION] != EV_CURRENT:
        raise ImageError(f"ELF version {image[EI_VERSION]} at file offset {EI_VERSION:#x} "
                         "is not EV_CURRENT (1)")
    (_, e_type, e_machine, _, e_entry, e_phoff, _, _, _,
     e_phentsize, e_phnum, _, _, _) = layout.header.unpack_from(image, 0)
    if e_type != ET_EXEC:
        raise ImageError(f"ELF type {e_type} (e_type, file offset 0x10) is not an "
                         f"executable (ET_EXEC = {ET_EXEC})")
    if e_machine != layout.machine:
        raise ImageError(f"ELF{layout.bits} machine {e_machine} (e_machine, file offset 0x12) "
                         f"is not {layout.machine_name} ({layout.machine})")
    segments, notes = _program_headers(image, layout, e_phoff, e_phentsize, e_phnum)
    owners = frozenset(owner for offset, size in notes for owner in _note_owners(image, offset,
                                                                                 size))
    return ElfImage(layout.bits, e_entry, segments, owners)


def _note_owners(image: bytes, offset: int, size: int) -> list[str]:
    """The owner names in one PT_NOTE segment: entries of namesz, descsz, type (4 bytes
    each), then the name and the descriptor, each padded to 4 bytes (gABI, "Note
    Section").  A malformed entry ends the scan; notes only inform, they load nothing."""
    owners = []
    end = min(offset + size, len(image))
    while offset + 12 <= end:
        namesz, descsz, _ = struct.unpack_from("<III", image, offset)
        name_at = offset + 12
        next_at = name_at + (namesz + 3 & ~3) + (descsz + 3 & ~3)
        if namesz == 0 or next_at > end:
            break
        owners.append(image[name_at:name_at + namesz].rstrip(b"\0").decode("latin-1"))
        offset = next_at
    return owners


def _program_headers(image: bytes, layout: _ElfClass, phoff: int, phentsize: int,
                     phnum: int) -> tuple[tuple[ElfSegment, ...], list[tuple[int, int]]]:
    """The PT_LOAD segments, and the (file offset, size) of the PT_NOTE ones."""
    if phnum == 0:
        raise ImageError("ELF file has no program headers (e_phnum = 0): nothing to load")
    if phnum == PN_XNUM:
        raise ImageError(f"ELF file has an extended program header count (e_phnum = "
                         f"{PN_XNUM:#x}), which is not supported")
    if phentsize < layout.phdr.size:
        raise ImageError(f"ELF{layout.bits} program header size e_phentsize = {phentsize} "
                         f"is smaller than {layout.phdr.size}")
    table_end = phoff + phentsize * phnum
    if table_end > len(image):
        raise ImageError(f"ELF program header table truncated: {phnum} entries of {phentsize} "
                         f"bytes at file offset {phoff:#x} end at {table_end:#x}, "
                         f"past the end of the file ({len(image):#x})")
    segments = []
    notes = []
    for index in range(phnum):
        entry_offset = phoff + index * phentsize
        raw = layout.phdr.unpack_from(image, entry_offset)
        p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz = (raw[i]
                                                                 for i in layout.phdr_fields)
        if p_type == PT_NOTE:
            notes.append((p_offset, p_filesz))
        if p_type != PT_LOAD:
            continue
        where = f"ELF program header {index} (file offset {entry_offset:#x})"
        if p_filesz > p_memsz:
            raise ImageError(f"{where}: p_filesz {p_filesz:#x} is larger than "
                             f"p_memsz {p_memsz:#x}")
        if p_offset + p_filesz > len(image):
            raise ImageError(f"{where}: segment data at file offset {p_offset:#x} + "
                             f"{p_filesz:#x} bytes runs past the end of the file "
                             f"({len(image):#x})")
        segments.append(ElfSegment(index, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz))
    _refuse_overlaps(segments)
    return tuple(segments), notes


def _refuse_overlaps(segments: list[ElfSegment]) -> None:
    """Two PT_LOAD segments loaded at overlapping physical addresses: the later one
    would silently overwrite the earlier (the gABI, "Program Header": loadable
    segments are sorted and do not overlap), so the image is refused."""
    loaded = sorted((s for s in segments if s.memsz), key=lambda s: s.paddr)
    for first, second in zip(loaded, loaded[1:], strict=False):
        if second.paddr < first.paddr + first.memsz:
            end = min(first.paddr + first.memsz, second.paddr + second.memsz)
            raise ImageError(f"ELF program headers {first.index} and {second.index}: PT_LOAD "
                             f"segments overlap at physical {second.paddr:#x}-{end:#x}")
