"""The committed guest images are exactly what guests/Makefile builds.

Rebuilds every bundled guest into a temporary directory with
`make -C guests OUT=<tmp>` and compares byte-for-byte with the images shipped
in pyvmm/guests/, so a source change without `make -C guests install` (or a
non-deterministic build) fails here.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from pyvmm.guests import BUNDLED_GUESTS, guest_path

REPO = Path(__file__).resolve().parents[2]
GUESTS_DIR = REPO / "guests"
MISSING_TOOLS = [tool for tool in ("make", "nasm", "ld") if shutil.which(tool) is None]

needs_tools = pytest.mark.skipif(
    bool(MISSING_TOOLS), reason=f"building guests needs {', '.join(MISSING_TOOLS)} (not installed)"
)


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("guests-build")
    result = subprocess.run(
        ["make", "-s", "-C", str(GUESTS_DIR), f"OUT={out}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"make failed:\n{result.stdout}\n{result.stderr}"
    return out


@needs_tools
@pytest.mark.parametrize("name", sorted(BUNDLED_GUESTS))
def test_committed_image_matches_rebuild(build_dir: Path, name: str) -> None:
    guest = BUNDLED_GUESTS[name]
    rebuilt = (build_dir / guest.filename).read_bytes()
    committed = guest_path(name).read_bytes()
    assert rebuilt == committed, (
        f"{guest.filename} differs from a fresh build: run `make -C guests install`"
    )


@needs_tools
def test_build_is_deterministic(build_dir: Path, tmp_path: Path) -> None:
    """A second build elsewhere gives the same bytes (no paths or times leak in)."""
    result = subprocess.run(["make", "-s", "-C", str(GUESTS_DIR), f"OUT={tmp_path}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for guest in BUNDLED_GUESTS.values():
        assert (tmp_path / guest.filename).read_bytes() == \
            (build_dir / guest.filename).read_bytes(), guest.filename


def test_hello_is_a_boot_sector() -> None:
    image = guest_path("hello").read_bytes()
    assert len(image) == 512
    assert image[510:] == b"\x55\xaa"  # BIOS boot signature
    assert b"Hello from a pyvmm boot sector!\r\n" in image


MULTIBOOT_KERNELS = sorted(name for name, guest in BUNDLED_GUESTS.items()
                           if guest.kind == "multiboot")


def test_multiboot_kernels_include_demo_and_benchmarks() -> None:
    assert {"demo", "bench-int", "bench-mem", "bench-sys", "bench-io"} <= set(MULTIBOOT_KERNELS)


@pytest.mark.parametrize("name", MULTIBOOT_KERNELS)
def test_demo_is_a_multiboot_elf32(name: str) -> None:
    image = guest_path(name).read_bytes()
    assert image[:4] == b"\x7fELF"
    assert image[4] == 1, "ELFCLASS32: QEMU's multiboot loader refuses ELF64"
    assert struct.unpack_from("<H", image, 18)[0] == 3  # e_machine = EM_386
    # Multiboot header: magic, flags, checksum summing to 0, 4-aligned, first 8 KiB.
    for offset in range(0, min(len(image), 8192) - 12, 4):
        magic, flags, checksum = struct.unpack_from("<III", image, offset)
        if magic == 0x1BADB002:
            assert (magic + flags + checksum) & 0xFFFFFFFF == 0
            assert not flags & (1 << 16), "loaded from ELF headers, not the a.out kludge"
            break
    else:
        pytest.fail("no multiboot header in the first 8 KiB")
    entry = struct.unpack_from("<I", image, 24)[0]
    assert 0x100000 <= entry < 0x200000
