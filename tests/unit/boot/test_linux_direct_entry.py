"""Entering the kernel proper directly: a vmlinux ELF, or a bzImage's payload
decompressed on the host (pyvmm/boot/linux_payload.py, boot.rst's payload_offset
and payload_length, protocol 2.08+).

Synthetic kernels are built here: an ELF64 executable with a "Linux" note
(include/linux/elfnote.h) and two PT_LOAD segments, wrapped in a bzImage whose
payload is that ELF compressed with each format the kernel build offers.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct

import pytest
from boot_board import make_board
from test_linux_boot import synthetic_bzimage

from pyvmm.boot import linux
from pyvmm.boot.detect import detect_kernel_kind
from pyvmm.boot.linux_payload import decompress_vmlinux
from pyvmm.errors import ImageError

MIB = 1 << 20
ENTRY = 0x1000000  # phys_startup_64 at LOAD_PHYSICAL_ADDR, as x86-64 vmlinux links it
TEXT = b"\x48\x31\xc0\xf4" * 64  # xor rax, rax; hlt
DATA = b"pyvmm-data" * 10
DATA_PADDR = 0x1200000
BSS = 0x3000


def _note(owner: bytes, kind: int, desc: bytes) -> bytes:
    name = owner + b"\0"
    return (struct.pack("<III", len(name), len(desc), kind) + name.ljust(-(-len(name) // 4) * 4,
            b"\0") + desc.ljust(-(-len(desc) // 4) * 4, b"\0"))


def synthetic_vmlinux(owner: bytes = b"Linux") -> bytes:
    """ELF64 x86-64 ET_EXEC: .text at ENTRY (vaddr 0xffffffff81000000, as Linux links
    it), data plus BSS at DATA_PADDR, and a PT_NOTE with one `owner` note."""
    note = _note(owner, 0x100, b"\0\0\0\0")
    phnum = 3
    text_off = 0x1000
    data_off = text_off + len(TEXT)
    note_off = data_off + len(DATA)
    header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01".ljust(16, b"\0"), 2, 62, 1,
                         ENTRY, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    phdrs = b"".join([
        struct.pack("<IIQQQQQQ", 1, 5, text_off, 0xFFFFFFFF81000000, ENTRY, len(TEXT),
                    len(TEXT), 0x200000),
        struct.pack("<IIQQQQQQ", 1, 6, data_off, 0xFFFFFFFF81200000, DATA_PADDR, len(DATA),
                    len(DATA) + BSS, 0x200000),
        struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(note), len(note), 4),
    ])
    image = bytearray((header + phdrs).ljust(text_off, b"\0"))
    image += TEXT + DATA + note
    return bytes(image)


def bzimage_with_payload(payload: bytes) -> bytes:
    """A synthetic bzImage whose payload fields point at `payload` (after 16 bytes of
    decompressor stand-in), plus the 4-byte size the kernel build appends."""
    base = bytearray(synthetic_bzimage(payload=16))
    base += payload + struct.pack("<I", len(payload))
    struct.pack_into("<II", base, 0x248, 16, len(payload))
    return bytes(base)


@pytest.fixture
def board():
    board = make_board(64 * MIB)
    yield board
    board.close()


COMPRESSORS = {
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "xz": lambda data: lzma.compress(data, format=lzma.FORMAT_XZ, filters=[
        {"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2}]),  # the kernel's xz_wrap.sh
    "lzma": lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE),
    "bzip2": bz2.compress,
}


@pytest.mark.parametrize("name", COMPRESSORS)
def test_payload_decompressed_on_the_host(name: str) -> None:
    vmlinux = synthetic_vmlinux()
    image = bzimage_with_payload(COMPRESSORS[name](vmlinux))
    header = linux.parse_header(image)
    assert decompress_vmlinux(image, header.setup_size, header.version) == vmlinux


@pytest.mark.parametrize(("payload", "match"), [
    (b"\x28\xb5\x2f\xfd" + bytes(64), "compressed with zstd.*--linux-entry 64"),
    (b"\x02\x21\x4c\x18" + bytes(64), "compressed with lz4"),
    (b"\x1f\x8b" + bytes(64), "gzip payload is corrupt"),
    (b"\xfd7zXZ\x00" + bytes(64), "xz payload is corrupt"),
    (b"\x00\x01\x02\x03" + bytes(64), "no known compression format"),
])
def test_undecodable_payloads_refused(board, payload: bytes, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        linux.load_linux(board, bzimage_with_payload(payload), "", None,
                         linux.ENTRY_DECOMPRESSED)
    assert board.memory.read(ENTRY, 16) == bytes(16)  # nothing written


def test_payload_fields_outside_the_file(board) -> None:
    image = bytearray(bzimage_with_payload(gzip.compress(synthetic_vmlinux())))
    struct.pack_into("<I", image, 0x24C, 1 << 30)
    with pytest.raises(ImageError, match="outside the"):
        linux.load_linux(board, bytes(image), "", None, linux.ENTRY_DECOMPRESSED)


def _check_loaded(board, state) -> None:
    mem = board.memory
    assert state.rip == ENTRY and state.rsi == linux.BOOT_PARAMS
    assert mem.read(ENTRY, len(TEXT)) == TEXT  # PT_LOAD at p_paddr, not p_vaddr
    assert mem.read(DATA_PADDR, len(DATA)) == DATA
    assert mem.read(DATA_PADDR + len(DATA), BSS) == bytes(BSS)
    params = mem.read(linux.BOOT_PARAMS, 0x1000)
    assert params[0x202:0x206] == b"HdrS" and params[0x210] == 0xFF
    cmd_ptr, = struct.unpack_from("<I", params, 0x228)
    assert mem.read(cmd_ptr, 14) == b"console=ttyS0\0"
    rd_image, rd_size = struct.unpack_from("<II", params, 0x218)
    assert rd_size == 5000 and rd_image >= DATA_PADDR + len(DATA) + BSS


def test_vmlinux_entered_at_its_physical_entry(board) -> None:
    vmlinux = synthetic_vmlinux()
    assert detect_kernel_kind(vmlinux) == "linux"
    state = linux.load_linux(board, vmlinux, "console=ttyS0", b"\x1f\x8b" + bytes(4998))
    _check_loaded(board, state)
    params = board.memory.read(linux.BOOT_PARAMS, 0x1000)
    assert struct.unpack_from("<H", params, 0x206)[0] == linux.VMLINUX_PROTOCOL
    assert struct.unpack_from("<I", params, 0x238)[0] == linux.VMLINUX_CMDLINE_SIZE


def test_bzimage_decompressed_keeps_its_own_setup_header(board) -> None:
    image = bzimage_with_payload(COMPRESSORS["xz"](synthetic_vmlinux()))
    state = linux.load_linux(board, image, "console=ttyS0", b"\x1f\x8b" + bytes(4998),
                             linux.ENTRY_DECOMPRESSED)
    _check_loaded(board, state)
    params = board.memory.read(linux.BOOT_PARAMS, 0x1000)
    assert params[0x1F1:0x264] != bytes(0x264 - 0x1F1)
    assert struct.unpack_from("<Q", params, 0x258) == struct.unpack_from("<Q", image, 0x258)


def test_an_elf_without_linux_notes_is_not_a_vmlinux() -> None:
    assert not linux.is_vmlinux(synthetic_vmlinux(owner=b"GNU"))
    with pytest.raises(ImageError, match="neither a Linux bzImage.*vmlinux"):
        detect_kernel_kind(synthetic_vmlinux(owner=b"GNU"))


def test_vmlinux_larger_than_ram_refused() -> None:
    small = make_board(16 * MIB)  # the segments at 16 MiB+ do not fit
    try:
        with pytest.raises(ImageError, match="does not fit in guest RAM|give more -m"):
            linux.load_linux(small, synthetic_vmlinux(), "")
    finally:
        small.close()
