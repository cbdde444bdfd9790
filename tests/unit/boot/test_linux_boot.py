"""The Linux boot protocol loader (pyvmm/boot/linux.py) against boot.rst.

Synthetic setup headers cover every refusal; the real bzImage built by
pyvmm.guests.linux_build (when it is in the cache) covers the layout.
"""

from __future__ import annotations

import struct

import pytest
from boot_board import make_board

from pyvmm.boot import linux
from pyvmm.boot.detect import detect_kernel_kind
from pyvmm.cpu.state import CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, FLAG_IF
from pyvmm.errors import ConfigError, ImageError
from pyvmm.guests import linux_build

MIB = 1 << 20


def synthetic_bzimage(version: int = 0x020F, setup_sects: int = 4, payload: int = 4096,
                      init_size: int = 2 * MIB, initrd_addr_max: int = 0x7FFFFFFF,
                      cmdline_size: int = 2047, xloadflags: int = 1,
                      pref_address: int = 0x1000000) -> bytes:
    """A file with a protocol-2.10+ setup header (boot.rst field offsets)."""
    image = bytearray((setup_sects + 1) * 512 + payload)
    struct.pack_into("<B", image, 0x1F1, setup_sects)
    struct.pack_into("<H", image, 0x1FE, 0xAA55)
    struct.pack_into("<BB", image, 0x200, 0xEB, 0x6A)  # jmp to 0x26C: header end
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, version)
    struct.pack_into("<B", image, 0x211, 0x01)  # LOADED_HIGH
    struct.pack_into("<I", image, 0x22C, initrd_addr_max)
    struct.pack_into("<H", image, 0x236, xloadflags)
    struct.pack_into("<I", image, 0x238, cmdline_size)
    struct.pack_into("<Q", image, 0x258, pref_address)
    struct.pack_into("<I", image, 0x260, init_size)
    image[(setup_sects + 1) * 512:] = b"\x90" * payload
    return bytes(image)


@pytest.fixture
def big_board():
    board = make_board(64 * MIB)
    yield board
    board.close()


def test_detects_bzimage_and_multiboot() -> None:
    assert detect_kernel_kind(synthetic_bzimage()) == "linux"
    with pytest.raises(ImageError, match="neither a Linux bzImage"):
        detect_kernel_kind(bytes(9000))


def test_zero_page_and_entry_state(big_board) -> None:
    image = synthetic_bzimage()
    initrd = b"\x1f\x8b" + bytes(10000)
    state = linux.load_linux(big_board, image, "console=ttyS0", initrd)
    mem = big_board.memory
    params = mem.read(linux.BOOT_PARAMS, 0x1000)
    assert params[0x202:0x206] == b"HdrS"
    assert params[0x210] == 0xFF  # type_of_loader
    assert params[0x211] & 0x81 == 0x81  # LOADED_HIGH | CAN_USE_HEAP
    assert params[0x0F] == 0  # orig_video_isVGA
    cmd_ptr, = struct.unpack_from("<I", params, 0x228)
    assert mem.read(cmd_ptr, 14) == b"console=ttyS0\0"
    rd_image, rd_size = struct.unpack_from("<II", params, 0x218)
    assert rd_size == len(initrd) and rd_image % 4096 == 0
    assert rd_image + rd_size <= 64 * MIB
    assert mem.read(rd_image, len(initrd)) == initrd
    entries = [struct.unpack_from("<QQI", params, 0x2D0 + 20 * i) for i in range(params[0x1E8])]
    assert entries == [(e.base, e.length, e.type) for e in big_board.e820_map()]
    assert mem.read(0x100000, 16) == b"\x90" * 16  # protected-mode part at 1 MiB
    assert state.rip == 0x100200 and state.rsi == linux.BOOT_PARAMS
    assert state.segments["cs"].selector == 0x10 and state.segments["cs"].l == 1
    assert state.segments["ds"].selector == 0x18
    assert state.cr0 & CR0_PG and state.cr4 & CR4_PAE
    assert state.efer & (EFER_LME | EFER_LMA) == EFER_LME | EFER_LMA
    assert not state.rflags & FLAG_IF
    gdt = mem.read(state.gdtr.base, state.gdtr.limit + 1)
    code, = struct.unpack_from("<Q", gdt, 0x10)
    assert code >> 53 & 1 == 1  # L bit of __BOOT_CS


def test_page_tables_identity_map_4gib() -> None:
    tables = linux.identity_page_tables(0x9000)
    pml4, = struct.unpack_from("<Q", tables, 0)
    assert pml4 & ~0xFFF == 0xA000
    last_pd_entry, = struct.unpack_from("<Q", tables, 0x2000 + 8 * (4 * 512 - 1))
    assert last_pd_entry & ~0xFFF == 0xFFE00000 and last_pd_entry & 0x83 == 0x83


@pytest.mark.parametrize(("image", "match"), [
    (synthetic_bzimage()[:0x250], "truncated"),
    (synthetic_bzimage()[:5 * 512], "truncated"),
    (synthetic_bzimage(version=0x0209), "2.09 is too old"),
    (synthetic_bzimage(xloadflags=0), "no 64-bit entry"),
    (synthetic_bzimage(init_size=100 * MIB), "give more -m"),
])
def test_bad_images_refused_before_writing(big_board, image: bytes, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        linux.load_linux(big_board, image, "")
    assert big_board.memory.read(0x100000, 16) == bytes(16)


def test_initrd_must_fit_below_limit(big_board) -> None:
    image = synthetic_bzimage(initrd_addr_max=0x01FFFFFF)
    with pytest.raises(ImageError, match="initrd of .* does not fit"):
        linux.load_linux(big_board, image, "", bytes(20 * MIB))
    assert big_board.memory.read(linux.BOOT_PARAMS + 0x200, 4) == bytes(4)


def test_cmdline_over_cmdline_size(big_board) -> None:
    with pytest.raises(ConfigError, match="cmdline_size is 16"):
        linux.load_linux(big_board, synthetic_bzimage(cmdline_size=16), "x" * 17)


def _built_kernel():
    key_dir = linux_build.cache_root() / f"kernel-{linux_build.kernel_key()}"
    return key_dir / "bzImage"


@pytest.mark.skipif(not _built_kernel().is_file(),
                    reason="the Linux guest is not built (python -m pyvmm.guests.linux_build)")
def test_real_bzimage(big_board) -> None:
    image = _built_kernel().read_bytes()
    header = linux.parse_header(image)
    assert header.version >= 0x020A and header.xloadflags & 1
    state = linux.load_linux(big_board, image, linux_build.DEFAULT_CMDLINE)
    assert big_board.memory.read(0x100000, 64) == image[header.setup_size:header.setup_size + 64]
    assert state.rip == 0x100200


def test_cli_refuses_unknown_kernel_and_misplaced_initrd(tmp_path) -> None:
    from tests.conftest import run_pyvmm

    junk = tmp_path / "junk"
    junk.write_bytes(bytes(9000))
    result = run_pyvmm("run", "--engine", "interp", "--kernel", str(junk), timeout=30)
    assert result.returncode == 2
    assert b"neither a Linux bzImage" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_pyvmm("run", "--engine", "interp", "--initrd", str(junk), "hello", timeout=30)
    assert result.returncode == 2 and b"--initrd only applies to Linux" in result.stderr
