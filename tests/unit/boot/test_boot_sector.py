import pytest

from pyvmm.boot import load_boot_sector
from pyvmm.cpu.state import CR0_PE, FLAG_IF
from pyvmm.errors import ImageError


def sector(body: bytes = b"\xfa\xf4", signature: bytes = b"\x55\xaa") -> bytes:
    return body + bytes(510 - len(body)) + signature


def test_copies_sector_to_7c00(board):
    image = bytes(range(256)) + bytes(range(254)) + b"\x55\xaa"
    load_boot_sector(board, image)
    assert board.memory.read(0x7C00, 512) == image
    assert board.memory.read(0x7BFF, 1) == b"\0"
    assert board.memory.read(0x7E00, 1) == b"\0"


def test_entry_state_is_real_mode_at_0000_7c00(board):
    state = load_boot_sector(board, sector())
    cs = state.segments["cs"]
    assert (cs.selector, cs.base, state.rip) == (0, 0, 0x7C00)
    assert cs.type & 0x8  # code
    for name in ("ds", "es", "ss"):
        seg = state.segments[name]
        assert (seg.selector, seg.base, seg.limit) == (0, 0, 0xFFFF)
    assert state.rsp == 0x7C00
    assert state.rdx & 0xFF == 0x80
    assert state.rflags == 0x2 and not state.rflags & FLAG_IF
    assert not state.cr0 & CR0_PE
    assert state.mode_name() == "real"


@pytest.mark.parametrize("image, message", [
    (b"", "boot sector image is empty (expected exactly 512 bytes)"),
    (sector()[:511], "boot sector image is truncated: 511 bytes, expected exactly 512"),
    (sector() + b"\0", "image is 513 bytes: not a boot sector (a boot sector is exactly "
                       "512 bytes)"),
    (sector(signature=b"\xaa\x55"), "boot sector signature at offset 0x1fe is 0xaa 0x55, "
                                     "expected 0x55 0xaa"),
    (sector(signature=b"\0\0"), "boot sector signature at offset 0x1fe is 0x00 0x00, "
                                "expected 0x55 0xaa"),
])
def test_bad_images_are_refused_without_writing(board, image, message):
    with pytest.raises(ImageError) as info:
        load_boot_sector(board, image)
    assert str(info.value) == message
    assert board.memory.read(0x7C00, 512) == bytes(512)
