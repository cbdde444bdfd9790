"""Loading a Linux bzImage by the x86 boot protocol (64-bit entry).

The kernel's Documentation/arch/x86/boot.rst (linux-source-6.1) is the spec
cited as "boot.rst §..." below.

The file: a real-mode part of (setup_sects + 1) sectors of 512 bytes
(setup_sects 0 means 4), whose setup header starts at offset 0x1F1 and
carries the magic "HdrS" at 0x202 and the protocol version at 0x206
(§"The Real-Mode Kernel Header"); then the protected-mode kernel.
pyvmm needs protocol 2.10 or later (§"Details of Header Fields": 2.10 adds
kernel_alignment/relocatable_kernel, 2.06 cmdline_size, 2.12 xloadflags)
and a kernel that can be entered in 64-bit mode (xloadflags bit 0,
XLF_KERNEL_64).

What the loader writes (§"64-bit Boot Protocol"):
- the protected-mode kernel at 0x100000, the protocol's default load
  address (code32_start) which every kernel accepts: a relocatable one
  moves itself, a fixed one decompresses to its LOAD_PHYSICAL_ADDR;
- the zero page (struct boot_params, arch/x86/include/uapi/asm/bootparam.h)
  at BOOT_PARAMS: the file's setup header copied to offset 0x1F1, then
  type_of_loader 0xFF (undefined loader id), loadflags LOADED_HIGH |
  CAN_USE_HEAP, heap_end_ptr, cmd_line_ptr, ramdisk_image/size, the e820
  table (0x2D0, 20-byte entries, count at 0x1E8) from the board's map,
  hardware_subarch 0 (default PC), and screen_info all zero
  (orig_video_isVGA = 0: no video, so the serial console is the console);
- the command line, NUL-terminated, at CMDLINE (at most cmdline_size bytes);
- the initrd at the highest 4 KiB-aligned address whose end stays below both
  initrd_addr_max and the end of RAM (as QEMU and GRUB place it);
- a GDT with __BOOT_CS = 0x10 (64-bit code) and __BOOT_DS = 0x18 (flat data);
- page tables identity-mapping the first 4 GiB with 2 MiB pages;
- the ACPI and MP tables in the F-segment (boot/tables.py), the RSDP's
  address in acpi_rsdp_addr (0x070, protocol 2.14).

The CPU state on entry (§"64-bit Boot Protocol"): long mode with paging on
(CR0.PE|PG, CR4.PAE, EFER.LME|LMA), CS = __BOOT_CS, DS/ES/SS = __BOOT_DS,
interrupts off, RIP = load address + 0x200 (startup_64), RSI = the zero
page's address.

The kernel proper can also be entered directly, as Firecracker boots a
vmlinux: `--kernel vmlinux` (an ELF64 x86-64 executable with "Linux" ELF
notes), or a bzImage with `--linux-entry decompressed`, whose payload
pyvmm decompresses on the host (boot/linux_payload.py).  Its PT_LOAD
segments go to their physical addresses (p_paddr, LOAD_PHYSICAL_ADDR for a
kernel linked there, so no relocation is needed) and the CPU starts at
e_entry, phys_startup_64 (arch/x86/kernel/head_64.S), in the same state as
above.  This skips the guest's decompressor: for an xz kernel such as
Debian's that is billions of instructions under a software engine.  The
zero page then carries the bzImage's setup header, or for a bare vmlinux
the fields a loader must fill (boot.rst §"Details of Header Fields").

Low-memory layout (all in the first 640 KiB, below the kernel):
    0x05000  GDT               0x07000  boot_params (4 KiB)
    0x09000  page tables (PML4, PDPT, 4 page directories: 0x9000-0xEFFF)
    0x20000  command line      RSP 0x6FF0 (the kernel sets its own at once)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyvmm.boot.elf import ElfImage, is_elf, parse_elf
from pyvmm.boot.gdt import encode_descriptor
from pyvmm.boot.linux_payload import decompress_vmlinux
from pyvmm.boot.ram import Chunk, require_ram, write_chunks
from pyvmm.boot.tables import RSDP_ADDRESS, install_firmware_tables
from pyvmm.cpu.state import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    FLAG_RESERVED1,
    CpuState,
    SegmentState,
    TableRegister,
)
from pyvmm.errors import ConfigError, ImageError

if TYPE_CHECKING:
    from pyvmm.board.pc import PcBoard

SECTOR = 512
HEADER_OFFSET = 0x1F1
HEADER_MAGIC = b"HdrS"
MIN_PROTOCOL = 0x020A
BOOT_FLAG = 0xAA55
XLF_KERNEL_64 = 1 << 0
LOADED_HIGH = 1 << 0
CAN_USE_HEAP = 1 << 7
TYPE_OF_LOADER = 0xFF  # "undefined" boot loader id (boot.rst, type_of_loader)
KERNEL_LOAD = 0x100000
STARTUP_64_OFFSET = 0x200

# --linux-entry: how a bzImage is entered.
ENTRY_64 = "64"
ENTRY_DECOMPRESSED = "decompressed"
ENTRY_REAL = "real"
LINUX_ENTRIES: dict[str, str] = {
    ENTRY_64: "the bzImage's startup_64, which decompresses the kernel in the guest",
    ENTRY_DECOMPRESSED: "pyvmm decompresses the bzImage's payload (gzip, xz, lzma, bzip2) on "
                        "the host and enters the kernel proper at its 64-bit entry, as "
                        "Firecracker boots a vmlinux",
    ENTRY_REAL: "SeaBIOS (--bios FILE, default /usr/share/seabios/bios-256k.bin) boots "
                "pyvmm's linuxboot option ROM, which loads the kernel from fw_cfg and enters "
                "its 16-bit real-mode setup code, as a boot loader does (boot/linux_real.py); "
                "a reset boots it again",
}
# The entries that boot through firmware at the reset vector (a reset re-enters them).
FIRMWARE_ENTRIES = frozenset({ENTRY_REAL})
# The header a bare vmlinux gets in its zero page: what boot.rst asks a loader to fill
# for protocol 2.15, the version the 6.1 kernel's own header carries.
VMLINUX_PROTOCOL = 0x020F
VMLINUX_CMDLINE_SIZE = 2047  # COMMAND_LINE_SIZE (2048, arch/x86/include/asm/setup.h) - 1
VMLINUX_INITRD_ADDR_MAX = 0x7FFFFFFF

GDT_ADDR = 0x5000
BOOT_PARAMS = 0x7000
BOOT_PARAMS_SIZE = 0x1000
PAGE_TABLES = 0x9000
CMDLINE = 0x20000
ENTRY_RSP = 0x6FF0
BOOT_CS = 0x10
BOOT_DS = 0x18

# struct boot_params offsets (bootparam.h) and setup-header field offsets.
E820_ENTRIES_OFFSET = 0x1E8
E820_TABLE_OFFSET = 0x2D0
E820_MAX_ENTRIES = 128
EXT_RAMDISK_IMAGE = 0x0C0
EXT_RAMDISK_SIZE = 0x0C4
EXT_CMD_LINE_PTR = 0x0C8
ACPI_RSDP_ADDR = 0x070  # u64 acpi_rsdp_addr (protocol 2.14; older kernels ignore it)

# (name, offset in the file/zero page, struct format) of the header fields used.
_FIELDS: dict[str, tuple[int, str]] = {
    "setup_sects": (0x1F1, "B"),
    "boot_flag": (0x1FE, "H"),
    "jump": (0x200, "H"),
    "header": (0x202, "4s"),
    "version": (0x206, "H"),
    "type_of_loader": (0x210, "B"),
    "loadflags": (0x211, "B"),
    "code32_start": (0x214, "I"),
    "ramdisk_image": (0x218, "I"),
    "ramdisk_size": (0x21C, "I"),
    "heap_end_ptr": (0x224, "H"),
    "cmd_line_ptr": (0x228, "I"),
    "initrd_addr_max": (0x22C, "I"),
    "kernel_alignment": (0x230, "I"),
    "relocatable_kernel": (0x234, "B"),
    "xloadflags": (0x236, "H"),
    "cmdline_size": (0x238, "I"),
    "hardware_subarch": (0x23C, "I"),
    "pref_address": (0x258, "Q"),
    "init_size": (0x260, "I"),
}
_HEADER_END_MIN = 0x264  # through init_size (protocol 2.10)


def _get(data: bytes | bytearray, name: str) -> int | bytes:
    offset, fmt = _FIELDS[name]
    return struct.unpack_from("<" + fmt, data, offset)[0]


def _put(data: bytearray, name: str, value: int) -> None:
    offset, fmt = _FIELDS[name]
    struct.pack_into("<" + fmt, data, offset, value)


def is_bzimage(image: bytes) -> bool:
    """True if the file carries the setup-header magic "HdrS" at 0x202."""
    return image[0x202:0x206] == HEADER_MAGIC


LINUX_NOTE_OWNER = "Linux"  # include/linux/elfnote.h: LINUX_ELFNOTE(...)


def is_vmlinux(image: bytes) -> bool:
    """True for an ELF64 x86-64 executable carrying "Linux" ELF notes: the kernel proper."""
    if not is_elf(image):
        return False
    try:
        elf = parse_elf(image)
    except ImageError:
        return False
    return elf.bits == 64 and LINUX_NOTE_OWNER in elf.note_owners


@dataclass(frozen=True)
class SetupHeader:
    """The fields of a bzImage's setup header that the loader needs."""

    setup_sects: int
    version: int
    xloadflags: int
    initrd_addr_max: int
    cmdline_size: int
    init_size: int
    pref_address: int
    header_end: int  # file offset just past the header (0x202 + jump offset)

    @property
    def setup_size(self) -> int:
        return (self.setup_sects + 1) * SECTOR

    @property
    def version_text(self) -> str:
        return f"{self.version >> 8}.{self.version & 0xFF:02d}"


def parse_header(image: bytes) -> SetupHeader:
    """Validate the setup header (boot.rst §"The Real-Mode Kernel Header")."""
    if len(image) < _HEADER_END_MIN:
        raise ImageError(f"bzImage truncated: {len(image)} bytes, the setup header alone "
                         f"needs {_HEADER_END_MIN:#x}")
    if not is_bzimage(image):
        raise ImageError("not a Linux bzImage: no \"HdrS\" setup-header magic at 0x202")
    version = _get(image, "version")
    if version < MIN_PROTOCOL:
        raise ImageError(f"Linux boot protocol {version >> 8}.{version & 0xFF:02d} is too old: "
                         "pyvmm needs 2.10 or later")
    boot_flag = _get(image, "boot_flag")
    if boot_flag != BOOT_FLAG:
        raise ImageError(f"bzImage setup header: boot_flag is {boot_flag:#06x}, not 0xaa55")
    jump = _get(image, "jump")
    header_end = 0x202 + (jump >> 8)  # the jump is "EB xx": short jump past the header
    setup_sects = _get(image, "setup_sects") or 4
    header = SetupHeader(setup_sects=setup_sects, version=version,
                         xloadflags=_get(image, "xloadflags"),
                         initrd_addr_max=_get(image, "initrd_addr_max"),
                         cmdline_size=_get(image, "cmdline_size"),
                         init_size=_get(image, "init_size"),
                         pref_address=_get(image, "pref_address"), header_end=header_end)
    if header_end < _HEADER_END_MIN or header_end > header.setup_size:
        raise ImageError(f"bzImage setup header: its end {header_end:#x} (from the jump at "
                         f"0x200) is outside {_HEADER_END_MIN:#x}-{header.setup_size:#x}")
    if len(image) <= header.setup_size:
        raise ImageError(f"bzImage truncated: {len(image)} bytes, but the real-mode part "
                         f"alone is {header.setup_size} bytes ({setup_sects} setup sectors)")
    return header


def _gdt() -> tuple[bytes, TableRegister]:
    """[null, null, __BOOT_CS (64-bit code), __BOOT_DS (flat data)] at GDT_ADDR."""
    code = SegmentState.flat64_code(BOOT_CS)
    data = SegmentState.flat32(BOOT_DS, code=False)
    table = struct.pack("<4Q", 0, 0, encode_descriptor(code), encode_descriptor(data))
    return table, TableRegister(base=GDT_ADDR, limit=len(table) - 1)


def identity_page_tables(base: int) -> bytes:
    """PML4, PDPT and four page directories mapping 0-4 GiB with 2 MiB pages.

    SDM Vol. 3A §4.5, Figures 4-8 to 4-10: entry bit 0 present, bit 1
    writable, bit 7 (PS) in a page-directory entry maps a 2 MiB page.
    """
    present_rw = 0x3
    pml4 = struct.pack("<Q", (base + 0x1000) | present_rw).ljust(0x1000, b"\0")
    pdpt = b"".join(struct.pack("<Q", (base + 0x2000 + 0x1000 * i) | present_rw)
                    for i in range(4)).ljust(0x1000, b"\0")
    pds = b"".join(struct.pack("<Q", (i << 21) | present_rw | 0x80) for i in range(4 * 512))
    return pml4 + pdpt + pds


def _cmdline_bytes(cmdline: str, header: SetupHeader) -> bytes:
    data = cmdline.encode("utf-8")
    if b"\0" in data:
        raise ConfigError(f"kernel command line contains a NUL byte at position "
                          f"{data.index(0)}")
    if len(data) > header.cmdline_size:
        raise ConfigError(f"kernel command line is {len(data)} bytes; this kernel's "
                          f"cmdline_size is {header.cmdline_size}")
    return data + b"\0"


def _ram_top(board: PcBoard) -> int:
    """End of the RAM region that holds the kernel (the one above 1 MiB)."""
    region = board.memory.region_at(KERNEL_LOAD, 1)
    if region is None or region.readonly:
        raise ImageError(f"no RAM at {KERNEL_LOAD:#x} for the kernel")
    return region.end


def _initrd_address(header: SetupHeader, ram_top: int, kernel_end: int, size: int) -> int:
    """Highest page-aligned address for the initrd below initrd_addr_max (boot.rst
    §"Details of Header Fields", initrd_addr_max: the last byte's address) and RAM."""
    limit = min(header.initrd_addr_max + 1, ram_top)
    address = (limit - size) & ~0xFFF
    if size > limit or address < kernel_end:
        raise ImageError(f"initrd of {size} bytes does not fit below "
                         f"{limit:#x} (initrd_addr_max {header.initrd_addr_max:#x}, RAM end "
                         f"{ram_top:#x}) above the kernel's {kernel_end:#x}")
    return address


def _boot_params(image: bytes, header: SetupHeader, board: PcBoard, cmdline_addr: int,
                 initrd: tuple[int, int]) -> bytes:
    """The zero page (struct boot_params) for the 64-bit entry."""
    params = bytearray(BOOT_PARAMS_SIZE)
    params[HEADER_OFFSET:header.header_end] = image[HEADER_OFFSET:header.header_end]
    _put(params, "type_of_loader", TYPE_OF_LOADER)
    _put(params, "loadflags", _get(params, "loadflags") | LOADED_HIGH | CAN_USE_HEAP)
    # Heap end relative to the real-mode code's start (boot.rst: heap_end - 0x200);
    # unused by the 64-bit entry but kept consistent with CAN_USE_HEAP.
    _put(params, "heap_end_ptr", 0xE000 - 0x200)
    _put(params, "code32_start", KERNEL_LOAD)
    _put(params, "cmd_line_ptr", cmdline_addr & 0xFFFFFFFF)
    struct.pack_into("<I", params, EXT_CMD_LINE_PTR, cmdline_addr >> 32)
    address, size = initrd
    _put(params, "ramdisk_image", address & 0xFFFFFFFF)
    _put(params, "ramdisk_size", size & 0xFFFFFFFF)
    struct.pack_into("<I", params, EXT_RAMDISK_IMAGE, address >> 32)
    struct.pack_into("<I", params, EXT_RAMDISK_SIZE, size >> 32)
    _put(params, "hardware_subarch", 0)  # X86_SUBARCH_PC
    if not board.bios_loaded:
        struct.pack_into("<Q", params, ACPI_RSDP_ADDR, RSDP_ADDRESS)
    entries = board.e820_map()[:E820_MAX_ENTRIES]
    params[E820_ENTRIES_OFFSET] = len(entries)
    for index, entry in enumerate(entries):
        struct.pack_into("<QQI", params, E820_TABLE_OFFSET + 20 * index,
                         entry.base, entry.length, entry.type)
    return bytes(params)


def vmlinux_setup_header() -> tuple[bytes, SetupHeader]:
    """A setup header for a kernel that came without one (a bare vmlinux): boot_flag,
    "HdrS", the version, loadflags, initrd_addr_max, kernel_alignment, relocatable,
    xloadflags and cmdline_size, as boot.rst's field table gives them for 2.15."""
    raw = bytearray(_HEADER_END_MIN)
    _put(raw, "boot_flag", BOOT_FLAG)
    _put(raw, "jump", 0xEB | (_HEADER_END_MIN - 0x202) << 8)
    raw[0x202:0x206] = HEADER_MAGIC
    _put(raw, "version", VMLINUX_PROTOCOL)
    _put(raw, "loadflags", LOADED_HIGH)
    _put(raw, "initrd_addr_max", VMLINUX_INITRD_ADDR_MAX)
    _put(raw, "kernel_alignment", 0x200000)
    _put(raw, "relocatable_kernel", 1)
    _put(raw, "xloadflags", XLF_KERNEL_64)
    _put(raw, "cmdline_size", VMLINUX_CMDLINE_SIZE)
    header = SetupHeader(setup_sects=4, version=VMLINUX_PROTOCOL, xloadflags=XLF_KERNEL_64,
                         initrd_addr_max=VMLINUX_INITRD_ADDR_MAX,
                         cmdline_size=VMLINUX_CMDLINE_SIZE, init_size=0, pref_address=0,
                         header_end=_HEADER_END_MIN)
    return bytes(raw), header


def _vmlinux_chunks(vmlinux: bytes) -> tuple[ElfImage, list[Chunk]]:
    """The kernel proper's PT_LOAD segments at their physical addresses."""
    elf = parse_elf(vmlinux)
    if elf.bits != 64:
        raise ImageError("the kernel proper is an ELF32 file: pyvmm enters Linux in 64-bit mode")
    chunks = [Chunk(segment.paddr, segment.data(vmlinux), segment.memsz,
                    f"kernel segment {segment.index}")
              for segment in elf.segments if segment.memsz]
    if not chunks:
        raise ImageError("the kernel proper has no PT_LOAD segment with contents")
    if min(chunk.gpa for chunk in chunks) < KERNEL_LOAD:
        raise ImageError(f"a kernel segment loads below {KERNEL_LOAD:#x}, over the boot data")
    return elf, chunks


def entry_state_64(gdtr: TableRegister) -> CpuState:
    """boot.rst §"64-bit Boot Protocol": long mode, paging on, boot segments, IF=0."""
    state = CpuState()
    data = SegmentState.flat32(BOOT_DS, code=False)
    state.segments = {name: SegmentState.flat32(BOOT_DS, code=False)
                      for name in state.segments}
    state.segments["cs"] = SegmentState.flat64_code(BOOT_CS)
    state.segments["ss"] = data
    state.rip = KERNEL_LOAD + STARTUP_64_OFFSET
    state.rflags = FLAG_RESERVED1
    state.set_gpr("rsi", BOOT_PARAMS)
    state.set_gpr("rsp", ENTRY_RSP)
    state.cr0 = CR0_PE | CR0_ET | CR0_PG
    state.cr3 = PAGE_TABLES
    state.cr4 = CR4_PAE
    state.efer = EFER_LME | EFER_LMA
    state.gdtr = gdtr
    state.idtr = TableRegister(base=0, limit=0)
    return state


def load_linux(board: PcBoard, image: bytes, cmdline: str = "",
               initrd: bytes | None = None, entry: str = ENTRY_64) -> CpuState:
    """Load a bzImage or a vmlinux (and an initrd) for the 64-bit entry; return the
    entry state.  `entry` is one of LINUX_ENTRIES (a vmlinux is always entered directly).

    Everything is validated before anything is written to guest memory.
    """
    image = bytes(image)
    if entry not in LINUX_ENTRIES or entry in FIRMWARE_ENTRIES:
        raise ConfigError(f"Linux entry {entry!r} is not a direct one: "
                          f"{', '.join(sorted(set(LINUX_ENTRIES) - FIRMWARE_ENTRIES))}")
    ram_top = _ram_top(board)
    decompress_end = 0  # where a self-decompressing kernel's working area ends
    if is_vmlinux(image):
        setup, header = vmlinux_setup_header()
        elf, kernel_chunks = _vmlinux_chunks(image)
        start = elf.physical_entry()
    else:
        header = parse_header(image)
        if not header.xloadflags & XLF_KERNEL_64:
            raise ImageError("this bzImage has no 64-bit entry point (xloadflags bit 0 clear)")
        setup = image
        if entry == ENTRY_DECOMPRESSED:
            elf, kernel_chunks = _vmlinux_chunks(
                decompress_vmlinux(image, header.setup_size, header.version))
            start = elf.physical_entry()
        else:
            kernel = image[header.setup_size:]
            kernel_chunks = [Chunk(KERNEL_LOAD, kernel, len(kernel),
                                   "kernel (protected-mode part)")]
            # The kernel decompresses into init_size bytes at max(load address, its
            # LOAD_PHYSICAL_ADDR = pref_address for a fixed kernel).
            decompress_end = max(KERNEL_LOAD, header.pref_address) + header.init_size
            start = KERNEL_LOAD + STARTUP_64_OFFSET
    kernel_end = max(decompress_end, *(chunk.end for chunk in kernel_chunks))
    if kernel_end > ram_top:
        raise ImageError(f"the kernel needs RAM up to {kernel_end:#x}; guest RAM ends at "
                         f"{ram_top:#x}: give more -m")
    cmdline_data = _cmdline_bytes(cmdline, header)
    initrd_data = initrd or b""
    initrd_at = (_initrd_address(header, ram_top, kernel_end, len(initrd_data))
                 if initrd_data else 0)
    params = _boot_params(setup, header, board, CMDLINE, (initrd_at, len(initrd_data)))
    gdt, gdtr = _gdt()
    chunks = [*kernel_chunks,
              Chunk(GDT_ADDR, gdt, len(gdt), "GDT"),
              Chunk(BOOT_PARAMS, params, len(params), "boot_params"),
              Chunk(PAGE_TABLES, identity_page_tables(PAGE_TABLES), 0x6000, "page tables"),
              Chunk(CMDLINE, cmdline_data, len(cmdline_data), "command line")]
    if initrd_data:
        chunks.append(Chunk(initrd_at, initrd_data, len(initrd_data), "initrd"))
    for chunk in chunks:
        require_ram(board.memory, chunk.gpa, chunk.memsz, chunk.what)
    write_chunks(board.memory, chunks)
    install_firmware_tables(board)
    state = entry_state_64(gdtr)
    state.rip = start
    return state
