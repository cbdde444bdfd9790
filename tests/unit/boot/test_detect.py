import pytest
from boot_builders import Seg, build_elf, mb_header

from pyvmm.boot import detect_image_kind
from pyvmm.errors import ImageError


def test_multiboot_elf():
    assert detect_image_kind(build_elf(32, [Seg(0x100000, mb_header())], 0x100000)) == \
        "multiboot"


def test_multiboot_flat_image_of_512_bytes_is_multiboot():
    image = mb_header(flags=1 << 16, address=(0x100000, 0x100000, 0, 0, 0x100000))
    image += bytes(510 - len(image)) + b"\x55\xaa"
    assert detect_image_kind(image) == "multiboot"


def test_boot_sector():
    assert detect_image_kind(b"\xf4" + bytes(509) + b"\x55\xaa") == "boot-sector"


def test_unrecognised():
    with pytest.raises(ImageError) as info:
        detect_image_kind(bytes(1000))
    assert str(info.value) == ("unrecognised image (1000 bytes): no multiboot header in the "
                               "first 8192 bytes and not a 512-byte boot sector ending in "
                               "0x55 0xaa")


def test_broken_multiboot_header_reports_why():
    with pytest.raises(ImageError) as info:
        detect_image_kind(mb_header(checksum=0) + bytes(100))
    assert "bad checksum" in str(info.value)


def test_boot_sector_wins_over_a_stray_bad_magic():
    image = b"\xf4\0\0\0" + mb_header(checksum=0) + bytes(494) + b"\x55\xaa"
    assert detect_image_kind(image) == "boot-sector"
