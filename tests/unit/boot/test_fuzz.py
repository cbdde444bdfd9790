"""Corrupted images must fail with a one-line PyvmmError, never a Python internals error."""

from boot_board import make_board
from boot_builders import Seg, build_elf, elf32_kernel, mb_header
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvmm.boot import detect_image_kind, load_boot_sector, load_multiboot
from pyvmm.errors import ConfigError, ImageError

AOUT = mb_header(flags=0x10003, address=(0x200000, 0x200000, 0x200040, 0x201000, 0x20000C))
AOUT += bytes(0x40 - len(AOUT))
SEEDS = [elf32_kernel(), build_elf(64, [Seg(0x100000, mb_header() + b"\xf4", memsz=0x100)],
                                   0x10000C), AOUT]

BOARD = make_board()


@st.composite
def corrupted(draw):
    image = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        # Most structure lives in the headers: bias positions toward the front.
        limit = draw(st.sampled_from([0x40, 0x80, 0x1010, len(image)]))
        pos = draw(st.integers(0, min(limit, len(image)) - 1))
        image[pos] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(image))))
    return bytes(image if cut is None else image[:cut])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted())
def test_corrupted_multiboot_images_fail_cleanly(image):
    try:
        state = load_multiboot(BOARD, image)
    except (ImageError, ConfigError) as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert state.rax == 0x2BADB002
        assert BOARD.memory.region_at(state.rip) is not None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_fail_cleanly(image):
    for call in (lambda: load_boot_sector(BOARD, image), lambda: detect_image_kind(image)):
        try:
            call()
        except ImageError as exc:
            assert "\n" not in str(exc)
