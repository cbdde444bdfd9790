"""Loading a Multiboot (v1) kernel: image, boot information, GDT, entry state.

Multiboot Specification 0.6.96.  The kernel is placed either by the header's
address fields (flag bit 16, the "a.out kludge", §3.1.3) or by its ELF
program headers (§3.1.3: PT_LOAD segments at their physical addresses).
The machine state on entry follows §3.2:

- EAX = 0x2BADB002, EBX = physical address of the boot information;
- CS = 32-bit flat read/execute code, DS/ES/FS/GS/SS = 32-bit flat
  read/write data (offset 0, limit 0xFFFFFFFF);
- CR0: PE=1, PG=0; EFLAGS: VM=0, IF=0 (here exactly 0x2);
- A20 enabled (this board emulates no A20 masking, so it always is);
- ESP undefined by the spec: pyvmm sets 0x7000 (free conventional memory
  below the traditional 0x7C00 boot sector), so an early push is harmless;
- GDTR/IDTR undefined by the spec: GDTR points at a valid flat GDT matching
  the segment caches (selectors 0x08 code, 0x10 data), so reloading a
  segment register before the kernel installs its own GDT works; IDTR has
  limit 0, so any exception before the kernel sets its own IDT ends in a
  triple fault instead of jumping through garbage.

Command line: GRUB legacy and QEMU (hw/i386/multiboot.c, "%s %s" of
kernel_filename and the -append text) pass the kernel's file name as the
first word.  pyvmm passes `cmdline` verbatim; when the caller gives
`kernel_name`, the line becomes "<kernel_name> <cmdline>", byte-for-byte
what QEMU does, so a kernel that skips argv[0] sees the same arguments.

Where things go (all below 640 KiB, none overlapping the kernel):
    0x07000            initial ESP (grows down)
    0x90000-0x9FBFF    boot-information area: GDT, info structure, loader
                       name, memory map, command line (in that order)
A kernel that loads into the boot-information area is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyvmm.boot.elf import is_elf, parse_elf
from pyvmm.boot.gdt import flat_code_segment, flat_data_segment, flat_gdt
from pyvmm.boot.multiboot_header import AddressFields, MultibootHeader, find_header
from pyvmm.boot.multiboot_info import (
    INFO_SIZE,
    BootInfo,
    MemoryMapEntry,
    encode_mmap,
    memory_sizes,
)
from pyvmm.boot.ram import Chunk, require_ram, write_chunks
from pyvmm.boot.tables import install_firmware_tables
from pyvmm.cpu.state import CR0_ET, CR0_PE, FLAG_RESERVED1, CpuState, TableRegister
from pyvmm.errors import ConfigError, ImageError

if TYPE_CHECKING:
    from pyvmm.board.pc import PcBoard

BOOTLOADER_MAGIC = 0x2BADB002  # EAX on entry (§3.2)
BOOT_INFO_AREA_START = 0x90000
BOOT_INFO_AREA_END = 0x9FC00  # exclusive: the top KiB below 640 KiB stays untouched
ENTRY_ESP = 0x7000
BOOT_LOADER_NAME = b"pyvmm\0"
FOUR_GIB = 1 << 32
_ALIGN = 16  # alignment of each blob in the boot-information area


def _align(value: int) -> int:
    return (value + _ALIGN - 1) & ~(_ALIGN - 1)


def _aout_chunks(image: bytes, header: MultibootHeader,
                 fields: AddressFields) -> tuple[list[Chunk], int]:
    """Kernel chunks and entry point from the header's address fields (§3.1.3)."""
    where = f"multiboot header at file offset {header.offset:#x}"
    if fields.load_addr > fields.header_addr:
        raise ImageError(f"{where}: load_addr {fields.load_addr:#x} is above header_addr "
                         f"{fields.header_addr:#x}")
    file_start = header.offset - (fields.header_addr - fields.load_addr)
    if file_start < 0:
        raise ImageError(f"{where}: header_addr - load_addr = "
                         f"{fields.header_addr - fields.load_addr:#x} puts the start of the "
                         f"text before the start of the file")
    if fields.load_end_addr == 0:
        load_size = len(image) - file_start
    else:
        if fields.load_end_addr < fields.load_addr:
            raise ImageError(f"{where}: load_end_addr {fields.load_end_addr:#x} is below "
                             f"load_addr {fields.load_addr:#x}")
        load_size = fields.load_end_addr - fields.load_addr
        if file_start + load_size > len(image):
            raise ImageError(f"image truncated: load_addr..load_end_addr needs file bytes "
                             f"{file_start:#x}-{file_start + load_size - 1:#x}, but the "
                             f"file is {len(image):#x} bytes")
    memsz = load_size
    if fields.bss_end_addr:
        if fields.bss_end_addr < fields.load_addr + load_size:
            raise ImageError(f"{where}: bss_end_addr {fields.bss_end_addr:#x} is below the "
                             f"end of the loaded image {fields.load_addr + load_size:#x}")
        memsz = fields.bss_end_addr - fields.load_addr
    data = image[file_start:file_start + load_size]
    chunk = Chunk(fields.load_addr, data, memsz,
                  f"kernel image (address fields, file offset {file_start:#x})")
    return [chunk], fields.entry_addr


def _elf_chunks(image: bytes) -> tuple[list[Chunk], int]:
    """Kernel chunks and entry point from the ELF program headers."""
    elf = parse_elf(image)
    chunks = []
    for seg in elf.segments:
        if seg.memsz == 0:
            continue
        what = f"ELF program header {seg.index} segment (file offset {seg.offset:#x})"
        if seg.paddr + seg.memsz > FOUR_GIB:
            raise ImageError(f"{what} at physical {seg.paddr:#x}-"
                             f"{seg.paddr + seg.memsz - 1:#x} is not below 4 GiB")
        chunks.append(Chunk(seg.paddr, seg.data(image), seg.memsz, what))
    if not chunks:
        raise ImageError("ELF file has no non-empty PT_LOAD segment: nothing to load")
    entry = elf.physical_entry()
    if entry >= FOUR_GIB:
        raise ImageError(f"ELF{elf.bits} entry point {entry:#x} is not below 4 GiB")
    return chunks, entry


def kernel_chunks(image: bytes) -> tuple[MultibootHeader, list[Chunk], int]:
    """Validate the header and lay the kernel out: (header, chunks, physical entry)."""
    header = find_header(image)
    if header.address is not None:
        chunks, entry = _aout_chunks(image, header, header.address)
    elif is_elf(image):
        chunks, entry = _elf_chunks(image)
    else:
        raise ImageError(f"multiboot header at file offset {header.offset:#x} lacks flag bit "
                         "16 (address fields) and the image is not an ELF file: cannot tell "
                         "where to load it")
    return header, chunks, entry


def _cmdline_bytes(cmdline: str, kernel_name: str | None) -> bytes:
    text = cmdline if kernel_name is None else f"{kernel_name} {cmdline}"
    data = text.encode("utf-8")
    if b"\0" in data:
        raise ConfigError(f"kernel command line contains a NUL byte at position "
                          f"{data.index(0)}")
    return data + b"\0"


def _boot_info_chunks(board: PcBoard, cmdline: bytes) -> tuple[list[Chunk], int,
                                                               TableRegister]:
    """Chunks of the boot-information area, the info address and the GDTR."""
    gdt, gdtr = flat_gdt(BOOT_INFO_AREA_START)
    entries = [MemoryMapEntry(e.base, e.length, e.type) for e in board.e820_map()]
    mmap = encode_mmap(entries)
    info_addr = _align(BOOT_INFO_AREA_START + len(gdt))
    name_addr = _align(info_addr + INFO_SIZE)
    mmap_addr = _align(name_addr + len(BOOT_LOADER_NAME))
    cmdline_addr = _align(mmap_addr + len(mmap))
    end = cmdline_addr + len(cmdline)
    if end > BOOT_INFO_AREA_END:
        room = BOOT_INFO_AREA_END - cmdline_addr - 1
        raise ConfigError(f"kernel command line is {len(cmdline) - 1} bytes; at most {room} "
                          "fit in the boot-information area")
    mem_lower, mem_upper = memory_sizes(entries)
    info = BootInfo(mem_lower, mem_upper, cmdline_addr, mmap_addr, len(mmap), name_addr)
    blobs = ((BOOT_INFO_AREA_START, gdt, "GDT"), (info_addr, info.encode(), "multiboot info"),
             (name_addr, BOOT_LOADER_NAME, "boot loader name"),
             (mmap_addr, mmap, "memory map"), (cmdline_addr, cmdline, "command line"))
    chunks = [Chunk(gpa, data, len(data), what) for gpa, data, what in blobs]
    return chunks, info_addr, gdtr


def multiboot_entry_state(info_addr: int, entry: int, gdtr: TableRegister) -> CpuState:
    """The §3.2 machine state (see the module docstring for the undefined parts)."""
    state = CpuState()
    state.segments = {name: flat_data_segment() for name in state.segments}
    state.segments["cs"] = flat_code_segment()
    state.rip = entry
    state.rflags = FLAG_RESERVED1
    state.set_gpr("rax", BOOTLOADER_MAGIC)
    state.set_gpr("rbx", info_addr)
    state.set_gpr("rsp", ENTRY_ESP)
    state.cr0 = CR0_PE | CR0_ET
    state.gdtr = gdtr
    state.idtr = TableRegister(base=0, limit=0)
    return state


def load_multiboot(board: PcBoard, image: bytes, cmdline: str = "",
                   kernel_name: str | None = None) -> CpuState:
    """Load a Multiboot kernel and its boot information; return the entry state.

    Nothing is written to guest memory unless the whole layout is valid.
    """
    image = bytes(image)
    _, chunks, entry = kernel_chunks(image)
    for chunk in chunks:
        if chunk.overlaps(BOOT_INFO_AREA_START, BOOT_INFO_AREA_END):
            raise ImageError(f"{chunk.what} at {chunk.gpa:#x}-{chunk.end - 1:#x} overlaps the "
                             f"boot-information area {BOOT_INFO_AREA_START:#x}-"
                             f"{BOOT_INFO_AREA_END - 1:#x}")
    for chunk in chunks:
        require_ram(board.memory, chunk.gpa, chunk.memsz, chunk.what)
    require_ram(board.memory, entry, 1, "kernel entry point")
    info_chunks, info_addr, gdtr = _boot_info_chunks(board, _cmdline_bytes(cmdline, kernel_name))
    write_chunks(board.memory, chunks + info_chunks)
    install_firmware_tables(board)  # ACPI and MP tables where the kernel scans for them
    return multiboot_entry_state(info_addr, entry, gdtr)
