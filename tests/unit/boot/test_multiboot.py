import struct

import pytest
from boot_board import RAM_SIZE
from boot_builders import CODE, ENTRY, TEXT, Seg, build_elf, elf32_kernel, mb_header

from pyvmm.boot import load_multiboot
from pyvmm.cpu.state import CR0_PE, CR0_PG, FLAG_IF, FLAG_VM
from pyvmm.errors import ConfigError, ImageError

MIB = 1 << 20


def read_cstring(board, gpa: int) -> bytes:
    data = board.memory.read(gpa, 4096)
    return data[:data.index(0)]


def info_fields(board, addr: int) -> dict[str, int]:
    names = ("flags", "mem_lower", "mem_upper", "boot_device", "cmdline", "mods_count",
             "mods_addr")
    values = struct.unpack("<7I", board.memory.read(addr, 28))
    fields = dict(zip(names, values, strict=True))
    fields["mmap_length"], fields["mmap_addr"] = struct.unpack("<II",
                                                               board.memory.read(addr + 44, 8))
    fields["boot_loader_name"] = board.memory.read_u32(addr + 64)
    return fields


def mmap_entries(board, addr: int, length: int) -> list[tuple[int, int, int, int]]:
    entries, pos = [], addr
    while pos < addr + length:
        size = board.memory.read_u32(pos)
        base, length_, type_ = struct.unpack("<QQI", board.memory.read(pos + 4, 20))
        entries.append((size, base, length_, type_))
        pos += size + 4
    return entries


def test_elf32_segments_are_loaded_and_bss_zeroed(board):
    board.memory.write(0x102000, b"\xff" * 0x2001)  # stale bytes where the bss goes
    load_multiboot(board, elf32_kernel())
    assert board.memory.read(0x100000, len(TEXT)) == TEXT
    assert board.memory.read(0x102000, 4) == b"DATA"
    assert board.memory.read(0x102004, 0x2000 - 4) == bytes(0x2000 - 4)
    assert board.memory.read(0x104000, 1) == b"\xff"  # just past memsz: untouched


def test_entry_state_follows_spec_3_2(board):
    state = load_multiboot(board, elf32_kernel())
    assert state.rip == ENTRY
    assert state.rax == 0x2BADB002
    assert 0x90000 <= state.rbx < 0x9FC00
    assert state.cr0 & CR0_PE and not state.cr0 & CR0_PG
    assert state.rflags == 0x2 and not state.rflags & (FLAG_IF | FLAG_VM)
    cs = state.segments["cs"]
    assert (cs.selector, cs.base, cs.limit, cs.db, cs.g, cs.s) == (0x08, 0, 0xFFFFFFFF, 1, 1, 1)
    assert cs.type & 0xA == 0xA  # code, readable
    for name in ("ds", "es", "fs", "gs", "ss"):
        seg = state.segments[name]
        assert (seg.selector, seg.base, seg.limit, seg.db) == (0x10, 0, 0xFFFFFFFF, 1)
        assert seg.type & 0xA == 0x2  # data, writable
    assert state.mode_name() == "protected-32"
    assert state.rsp == 0x7000


def test_boot_information_structure(board):
    state = load_multiboot(board, elf32_kernel(), "console=ttyS0 debug")
    info = info_fields(board, state.rbx)
    assert info["flags"] == (1 << 0) | (1 << 2) | (1 << 6) | (1 << 9)
    assert info["mem_lower"] == 639
    assert info["mem_upper"] == (RAM_SIZE - MIB) // 1024
    assert read_cstring(board, info["cmdline"]) == b"console=ttyS0 debug"
    assert read_cstring(board, info["boot_loader_name"]) == b"pyvmm"
    expected = [(20, e.base, e.length, e.type) for e in board.e820_map()]
    assert mmap_entries(board, info["mmap_addr"], info["mmap_length"]) == expected
    assert info["mmap_length"] == 24 * len(expected)


def test_boot_information_lies_outside_the_kernel(board):
    state = load_multiboot(board, elf32_kernel(), "x" * 100)
    info = info_fields(board, state.rbx)
    for addr in (state.rbx, info["cmdline"], info["mmap_addr"], info["boot_loader_name"],
                 state.gdtr.base):
        assert 0x90000 <= addr < 0x9FC00


def test_kernel_name_is_prepended_like_qemu(board):
    state = load_multiboot(board, elf32_kernel(), "quiet", kernel_name="kernel.elf")
    info = info_fields(board, state.rbx)
    assert read_cstring(board, info["cmdline"]) == b"kernel.elf quiet"


def test_empty_command_line_is_an_empty_string(board):
    state = load_multiboot(board, elf32_kernel())
    info = info_fields(board, state.rbx)
    assert read_cstring(board, info["cmdline"]) == b""


def test_elf64_kernel_below_4g(board):
    text = mb_header() + CODE
    image = build_elf(64, [Seg(0x200000, text, memsz=0x3000)], 0x200000 + 12)
    board.memory.write(0x201000, b"\xee" * 16)
    state = load_multiboot(board, image)
    assert board.memory.read(0x200000, len(text)) == text
    assert board.memory.read(0x201000, 16) == bytes(16)
    assert state.rip == 0x20000C
    assert state.mode_name() == "protected-32"


def test_higher_half_entry_is_translated_to_physical(board):
    image = build_elf(32, [Seg(0x100000, TEXT, vaddr=0xC0100000)], 0xC0100000 + 12)
    state = load_multiboot(board, image)
    assert board.memory.read(0x100000, len(TEXT)) == TEXT
    assert state.rip == 0x10000C


def test_non_load_program_headers_are_skipped(board):
    note = Seg(0x300000, b"NOTE", p_type=4)  # PT_NOTE: not loaded even though paddr is RAM
    image = build_elf(32, [Seg(0x100000, TEXT), note], ENTRY)
    load_multiboot(board, image)
    assert board.memory.read(0x300000, 4) == bytes(4)


def test_aout_kludge_loads_by_address_fields(board):
    body = bytes(range(0x40))
    header_addr = 0x200040
    load_end = 0x200040 + 32 + 8  # through the header and 8 more bytes
    fields = (header_addr, 0x200000, load_end, load_end + 0x1000, 0x200060)
    image = body + mb_header(flags=1 << 16, address=fields) + b"ABCDEFGH" + b"NOTLOADED"
    board.memory.write(load_end, b"\xff" * 0x1000)
    state = load_multiboot(board, image)
    assert board.memory.read(0x200000, load_end - 0x200000) == image[:load_end - 0x200000]
    assert board.memory.read(load_end, 0x1000) == bytes(0x1000)  # bss, not "NOTLOADED"
    assert state.rip == 0x200060


def test_aout_kludge_skips_bytes_before_load_addr_and_loads_to_eof(board):
    # header at file offset 0x40 but only 0x10 bytes before it are the text start.
    fields = (0x300010, 0x300000, 0, 0, 0x300000)
    image = b"S" * 0x30 + b"T" * 0x10 + mb_header(flags=1 << 16, address=fields) + b"END"
    state = load_multiboot(board, image)
    loaded = image[0x30:]
    assert board.memory.read(0x300000, len(loaded)) == loaded
    assert board.memory.read(0x300000 + len(loaded), 4) == bytes(4)
    assert state.rip == 0x300000


def expect_error(board, image: bytes, message: str, exc=ImageError) -> None:
    before = board.memory.read(0x100000, 0x10000)
    low = board.memory.read(0x90000, 0x1000)
    with pytest.raises(exc) as info:
        load_multiboot(board, image)
    assert str(info.value) == message
    assert board.memory.read(0x100000, 0x10000) == before
    assert board.memory.read(0x90000, 0x1000) == low


def test_bad_checksum(board):
    image = build_elf(32, [Seg(0x100000, mb_header(checksum=0x1234) + CODE)], ENTRY)
    expect_error(board, image, "multiboot header at file offset 0x1000 has a bad checksum "
                 "0x00001234: magic + flags + checksum = 0x1badc236, must be 0 (mod 2^32)")


def test_header_beyond_8k(board):
    image = build_elf(32, [Seg(0x100000, TEXT)], ENTRY, data_offset=0x2000)
    expect_error(board, image, "multiboot magic 0x1badb002 found at file offset 0x2000, beyond "
                 "the first 8192 bytes where the header must lie")


def test_no_header(board):
    expect_error(board, build_elf(32, [Seg(0x100000, CODE)], 0x100000),
                 "no multiboot header: magic 0x1badb002 not found at any 4-byte-aligned offset "
                 "in the first 8192 bytes")


def test_unaligned_magic_is_not_a_header(board):
    image = b"\0\0" + mb_header() + bytes(100)
    expect_error(board, image, "no multiboot header: magic 0x1badb002 not found at any "
                 "4-byte-aligned offset in the first 8192 bytes")


def test_video_mode_requirement_is_refused(board):
    image = build_elf(32, [Seg(0x100000, mb_header(flags=0x7) + CODE)], ENTRY)
    expect_error(board, image, "multiboot header at file offset 0x1000 has flags 0x00000007 "
                 "requiring bit 2 (video mode table), which this loader cannot provide")


def test_unknown_requirement_bits_are_refused(board):
    image = build_elf(32, [Seg(0x100000, mb_header(flags=0x8010) + CODE)], ENTRY)
    expect_error(board, image, "multiboot header at file offset 0x1000 has flags 0x00008010 "
                 "requiring bit 4 (unknown requirement), bit 15 (unknown requirement), "
                 "which this loader cannot provide")


def test_optional_flag_bits_are_ignored(board):
    image = build_elf(32, [Seg(0x100000, mb_header(flags=0x80000003) + CODE)], ENTRY)
    assert load_multiboot(board, image).rip == ENTRY


def test_not_elf_without_address_fields(board):
    expect_error(board, mb_header() + CODE, "multiboot header at file offset 0x0 lacks flag bit "
                 "16 (address fields) and the image is not an ELF file: cannot tell where to "
                 "load it")


def test_address_fields_truncated(board):
    image = mb_header(flags=1 << 16) + b"\0" * 8
    expect_error(board, image, "multiboot header at file offset 0x0 is truncated: flag bit 16 "
                 "needs address fields up to offset 0x20, but the file ends at 0x14")


def test_aout_load_end_past_eof(board):
    fields = (0x200000, 0x200000, 0x201000, 0, 0x200000)
    image = mb_header(flags=1 << 16, address=fields) + bytes(32)
    expect_error(board, image, "image truncated: load_addr..load_end_addr needs file bytes "
                 "0x0-0xfff, but the file is 0x40 bytes")


def test_aout_load_addr_before_file_start(board):
    fields = (0x200010, 0x200000, 0, 0, 0x200000)
    image = mb_header(flags=1 << 16, address=fields) + bytes(32)
    expect_error(board, image, "multiboot header at file offset 0x0: header_addr - load_addr = "
                 "0x10 puts the start of the text before the start of the file")


def test_aout_bss_end_below_load_end(board):
    fields = (0x200000, 0x200000, 0x200020, 0x200010, 0x200000)
    image = mb_header(flags=1 << 16, address=fields)
    expect_error(board, image, "multiboot header at file offset 0x0: bss_end_addr 0x200010 is "
                 "below the end of the loaded image 0x200020")


def test_segment_outside_ram(board):
    image = build_elf(32, [Seg(0x100000, TEXT), Seg(RAM_SIZE - 0x10, b"X" * 0x20)], ENTRY)
    expect_error(board, image, f"ELF program header 1 segment (file offset 0x2000) at "
                 f"{RAM_SIZE - 0x10:#x}-{RAM_SIZE + 0xf:#x} does not fit in guest RAM "
                 f"(0x0-0x9ffff, 0x100000-{RAM_SIZE - 1:#x})")


def test_segment_across_the_640k_hole(board):
    image = build_elf(32, [Seg(0x100000, TEXT), Seg(0x9FF00, b"X", memsz=0x200)], ENTRY)
    expect_error(board, image, "ELF program header 1 segment (file offset 0x2000) at "
                 f"0x9ff00-0xa00ff does not fit in guest RAM (0x0-0x9ffff, "
                 f"0x100000-{RAM_SIZE - 1:#x})")


def test_segment_over_boot_information_area(board):
    image = build_elf(32, [Seg(0x8F000, TEXT, memsz=0x2000)], 0x8F00C)
    expect_error(board, image, "ELF program header 0 segment (file offset 0x1000) at "
                 "0x8f000-0x90fff overlaps the boot-information area 0x90000-0x9fbff")


def test_entry_outside_ram(board):
    image = build_elf(32, [Seg(0x100000, TEXT)], 0xA0000)
    expect_error(board, image, "kernel entry point at 0xa0000 does not fit in guest "
                 f"RAM (0x0-0x9ffff, 0x100000-{RAM_SIZE - 1:#x})")


def test_elf64_segment_above_4g(board):
    image = build_elf(64, [Seg(0x100000, TEXT), Seg(0x1_0000_0000, b"HIGH")], ENTRY)
    expect_error(board, image, "ELF program header 1 segment (file offset 0x2000) at physical "
                 "0x100000000-0x100000003 is not below 4 GiB")


def test_elf64_entry_above_4g(board):
    image = build_elf(64, [Seg(0x100000, TEXT)], 0x1_0000_0000)
    expect_error(board, image, "ELF64 entry point 0x100000000 is not below 4 GiB")


def test_truncated_elf_header(board):
    image = build_elf(32, [Seg(0x100000, TEXT)], ENTRY)
    # The file ends inside the ELF header, with a multiboot header at offset 28.
    cut = image[:28] + mb_header()
    expect_error(board, cut, "ELF32 header truncated: file is 40 bytes, the header needs 52")


def test_truncated_program_header_table(board):
    image = bytearray(build_elf(32, [Seg(0x100000, TEXT)], ENTRY))
    struct.pack_into("<H", image, 44, 300)  # e_phnum: 300 entries of 32 bytes from 0x34
    expect_error(board, bytes(image), "ELF program header table truncated: 300 entries of 32 "
                 "bytes at file offset 0x34 end at 0x25b4, past the end of the file (0x2000)")


def test_command_line_too_long(board):
    with pytest.raises(ConfigError) as info:
        load_multiboot(board, elf32_kernel(), "x" * 70000)
    assert str(info.value).startswith("kernel command line is 70000 bytes; at most ")


def test_command_line_with_nul(board):
    with pytest.raises(ConfigError) as info:
        load_multiboot(board, elf32_kernel(), "a\0b")
    assert str(info.value) == "kernel command line contains a NUL byte at position 1"


def test_address_fields_take_precedence_over_elf_headers(board):
    # An ELF whose program header says 0x100000, but whose multiboot header
    # (flag bit 16) says load the file from offset 0 at 0x300000 (§3.1.3).
    fields = (0x301000, 0x300000, 0, 0, 0x30100C + 32 - 12)
    text = mb_header(flags=1 << 16, address=fields) + CODE
    image = build_elf(32, [Seg(0x100000, text)], 0x100000)
    state = load_multiboot(board, image)
    assert board.memory.read(0x300000, 4) == b"\x7fELF"
    assert board.memory.read(0x301000, len(text)) == text
    assert board.memory.read(0x100000, 4) == bytes(4)
    assert state.rip == 0x301020


def test_aout_image_outside_ram(board):
    fields = (RAM_SIZE - 0x10, RAM_SIZE - 0x10, 0, RAM_SIZE + 0x1000, RAM_SIZE - 0x10)
    image = mb_header(flags=1 << 16, address=fields)
    expect_error(board, image, f"kernel image (address fields, file offset 0x0) at "
                 f"{RAM_SIZE - 0x10:#x}-{RAM_SIZE + 0xfff:#x} does not fit in guest RAM "
                 f"(0x0-0x9ffff, 0x100000-{RAM_SIZE - 1:#x})")
