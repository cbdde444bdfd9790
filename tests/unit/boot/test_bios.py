import pytest

from pyvmm.boot import load_bios
from pyvmm.cpu.state import CR0_CD, CR0_ET, CR0_NW, CR0_PE
from pyvmm.errors import ImageError

KIB = 1024


def rom(size: int) -> bytes:
    # A distinct pattern in every 16-byte line, so aliases can be told apart.
    return b"".join((i & 0xFFFFFFFF).to_bytes(4, "little") * 4 for i in range(size // 16))


def test_maps_rom_at_top_of_4g_and_below_1m(board):
    image = rom(64 * KIB)
    load_bios(board, image)
    assert board.memory.read(0xFFFFFFF0, 16) == image[-16:]
    assert board.memory.read((1 << 32) - len(image), 64) == image[:64]
    assert board.memory.read(0xFFFF0, 16) == image[-16:]
    assert board.memory.read(0xF0000, 16) == image[:16]


def test_large_rom_aliases_only_its_last_128k_low(board):
    image = rom(256 * KIB + 4 * KIB)  # any multiple of 4 KiB is accepted
    load_bios(board, image)
    assert board.memory.read(0xE0000, 16) == image[-128 * KIB:][:16]
    assert board.memory.read(0xFFFFFFF0, 16) == image[-16:]


def test_rom_is_read_only_to_the_guest(board):
    image = rom(64 * KIB)
    load_bios(board, image)
    board.memory.write(0xFFFFFFF0, b"\xcc" * 16)
    assert board.memory.read(0xFFFFFFF0, 16) == image[-16:]


def test_entry_state_is_the_reset_state(board):
    state = load_bios(board, rom(64 * KIB))
    cs = state.segments["cs"]
    assert (cs.selector, cs.base, cs.limit, state.rip) == (0xF000, 0xFFFF0000, 0xFFFF, 0xFFF0)
    assert cs.base + state.rip == 0xFFFFFFF0
    assert state.rdx == 0x600
    assert state.rflags == 0x2
    assert state.cr0 == CR0_CD | CR0_NW | CR0_ET and not state.cr0 & CR0_PE
    for name in ("ds", "es", "ss", "fs", "gs"):
        seg = state.segments[name]
        assert (seg.selector, seg.base, seg.limit) == (0, 0, 0xFFFF)
    assert state.mode_name() == "real"


def test_sixteen_mib_is_accepted(board):
    state = load_bios(board, bytes(16 * 1024 * KIB - 16) + b"\xea\x5b\xe0\x00\xf0" + bytes(11))
    assert board.memory.read(0xFFFFFFF0, 5) == b"\xea\x5b\xe0\x00\xf0"
    assert state.rip == 0xFFF0


@pytest.mark.parametrize("size, message", [
    (0, "BIOS image is 0 bytes: too small, it must be at least 64 KiB"),
    (60 * KIB, "BIOS image is 61440 bytes: too small, it must be at least 64 KiB"),
    (64 * KIB + 1, "BIOS image is 65537 bytes: not a multiple of 4 KiB"),
    (16 * 1024 * KIB + 4 * KIB, "BIOS image is 16781312 bytes: too large, it must be at "
                                "most 16 MiB"),
])
def test_bad_sizes_are_refused(board, size, message):
    with pytest.raises(ImageError) as info:
        load_bios(board, bytes(size))
    assert str(info.value) == message
    assert board.memory.region_at(0xFFFFFFF0) is None


def test_second_bios_is_refused(board):
    load_bios(board, rom(64 * KIB))
    with pytest.raises(ImageError) as info:
        load_bios(board, rom(64 * KIB))
    assert str(info.value) == "a BIOS image is already mapped on this board"


def test_rom_does_not_count_as_ram_for_other_loaders(board):
    from boot_builders import mb_header

    from pyvmm.boot import load_multiboot

    load_bios(board, rom(64 * KIB))
    fields = (0xF0000, 0xF0000, 0, 0, 0xF0000)  # a flat kernel aimed at the BIOS alias
    with pytest.raises(ImageError) as info:
        load_multiboot(board, mb_header(flags=1 << 16, address=fields))
    assert str(info.value).startswith("kernel image (address fields, file offset 0x0) at "
                                      "0xf0000-0xf001f does not fit in guest RAM (0x0-0x9ffff, ")
