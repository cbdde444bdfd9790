import struct

import pytest
from boot_builders import Seg, build_elf

from pyvmm.boot.elf import parse_elf
from pyvmm.errors import ImageError


def test_parses_elf32_and_elf64_load_segments():
    for bits in (32, 64):
        image = build_elf(bits, [Seg(0x100000, b"abc", memsz=0x10),
                                 Seg(0x0, b"n", p_type=4),
                                 Seg(0x200000, b"defg", vaddr=0xC0200000)], 0x100001)
        elf = parse_elf(image)
        assert elf.bits == bits and elf.entry == 0x100001
        assert [(s.index, s.paddr, s.vaddr, s.filesz, s.memsz) for s in elf.segments] == [
            (0, 0x100000, 0x100000, 3, 0x10), (2, 0x200000, 0xC0200000, 4, 4)]
        assert [s.data(image) for s in elf.segments] == [b"abc", b"defg"]


def test_physical_entry_falls_back_to_e_entry_outside_all_segments():
    elf = parse_elf(build_elf(32, [Seg(0x100000, b"x", vaddr=0xC0000000)], 0x400000))
    assert elf.physical_entry() == 0x400000


def patched(image: bytes, offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(image)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


ELF32 = build_elf(32, [Seg(0x100000, b"code")], 0x100000)
ELF64 = build_elf(64, [Seg(0x100000, b"code")], 0x100000)


@pytest.mark.parametrize("image, message", [
    (b"MZ\0\0", "not an ELF file: no 0x7f 'ELF' magic at file offset 0"),
    (b"\x7fELF\x01", "ELF header truncated: file is 5 bytes"),
    (ELF32[:51], "ELF32 header truncated: file is 51 bytes, the header needs 52"),
    (ELF64[:63], "ELF64 header truncated: file is 63 bytes, the header needs 64"),
    (patched(ELF32, 4, "B", 3), "ELF class 3 at file offset 0x4 is neither ELFCLASS32 (1) nor "
                                "ELFCLASS64 (2)"),
    (patched(ELF32, 5, "B", 2), "ELF data encoding 2 at file offset 0x5 is not little-endian "
                                "(ELFDATA2LSB = 1)"),
    (patched(ELF32, 6, "B", 0), "ELF version 0 at file offset 0x6 is not EV_CURRENT (1)"),
    (patched(ELF32, 16, "<H", 3), "ELF type 3 (e_type, file offset 0x10) is not an executable "
                                  "(ET_EXEC = 2)"),
    (patched(ELF32, 18, "<H", 62), "ELF32 machine 62 (e_machine, file offset 0x12) is not "
                                   "EM_386 (3)"),
    (patched(ELF64, 18, "<H", 3), "ELF64 machine 3 (e_machine, file offset 0x12) is not "
                                  "EM_X86_64 (62)"),
    (patched(ELF32, 44, "<H", 0), "ELF file has no program headers (e_phnum = 0): nothing to "
                                  "load"),
    (patched(ELF32, 44, "<H", 0xFFFF), "ELF file has an extended program header count "
                                       "(e_phnum = 0xffff), which is not supported"),
    (patched(ELF32, 42, "<H", 16), "ELF32 program header size e_phentsize = 16 is smaller "
                                   "than 32"),
    (patched(ELF32, 28, "<I", 0x1FF0), "ELF program header table truncated: 1 entries of 32 "
                                       "bytes at file offset 0x1ff0 end at 0x2010, past the "
                                       "end of the file (0x2000)"),
    (ELF64[:64 + 55], "ELF program header table truncated: 1 entries of 56 bytes at file "
                      "offset 0x40 end at 0x78, past the end of the file (0x77)"),
    # p_filesz (offset 52+16) larger than p_memsz (52+20)
    (patched(ELF32, 52 + 20, "<I", 2), "ELF program header 0 (file offset 0x34): p_filesz 0x4 "
                                       "is larger than p_memsz 0x2"),
    (ELF32[:0x1002], "ELF program header 0 (file offset 0x34): segment data at file offset "
                     "0x1000 + 0x4 bytes runs past the end of the file (0x1002)"),
])
def test_malformed_files_raise_one_line_image_errors(image, message):
    with pytest.raises(ImageError) as info:
        parse_elf(image)
    assert str(info.value) == message
    assert "\n" not in message


def test_every_truncation_raises_image_error_only():
    for image in (ELF32, ELF64):
        for length in range(0, 0x1004):
            try:
                parse_elf(image[:length])
            except ImageError:
                pass


@pytest.mark.parametrize("bits", [32, 64])
def test_overlapping_load_segments_are_refused(bits):
    # The second segment's bss reaches into the third's load address: loading both
    # would let one silently overwrite the other (gABI: loadable segments do not overlap).
    image = build_elf(bits, [Seg(0x100000, b"a" * 16), Seg(0x101000, b"b", memsz=0x2000),
                             Seg(0x102800, b"c")], 0x100000)
    with pytest.raises(ImageError, match=r"program headers 1 and 2: PT_LOAD segments overlap "
                                         r"at physical 0x102800-0x102801"):
        parse_elf(image)


def test_adjacent_load_segments_are_accepted():
    elf = parse_elf(build_elf(32, [Seg(0x100000, b"a", memsz=0x1000), Seg(0x101000, b"b")],
                              0x100000))
    assert [s.paddr for s in elf.segments] == [0x100000, 0x101000]


def test_overlapping_load_segments_are_a_one_line_cli_error(tmp_path):
    from boot_builders import mb_header

    from tests.conftest import run_pyvmm

    text = mb_header() + b"\x90" * 64
    path = tmp_path / "overlap.elf"
    path.write_bytes(build_elf(32, [Seg(0x100000, text), Seg(0x100010, b"x")], 0x100000))
    result = run_pyvmm("run", "--engine", "interp", "--kernel", str(path))
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "PT_LOAD segments overlap at physical 0x100010-0x100011" in lines[0]
