"""`--linux-entry real` (pyvmm/boot/linux_real.py, guests/linuxboot/) against its specs.

The real-mode layout against boot.rst ("Sample Boot Configuration", "Loading
The Rest of The Kernel", "Details of Header Fields"), the fw_cfg items it is
published as (QEMU docs/specs/fw_cfg.rst), and the option ROM's header,
checksums and PnP expansion header (BIOS Boot Specification 1.01, Appendix A)
read from the committed pyvmm/guests/linuxboot.bin.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from boot_board import make_board
from iced_x86 import Decoder, Mnemonic
from test_linux_boot import synthetic_bzimage

from pyvmm.boot import linux_real
from pyvmm.boot.registry import BootInputs, loader
from pyvmm.cli import build_parser, main, resolve_image
from pyvmm.devices import fw_cfg as cfg
from pyvmm.errors import ConfigError, ImageError
from pyvmm.guests import LINUXBOOT_ROM

MIB = 1 << 20
RAM = 64 * MIB
REPO = Path(__file__).resolve().parents[3]


def _u16(data: bytes, offset: int) -> int:
    return struct.unpack_from("<H", data, offset)[0]


def _u32(data: bytes, offset: int) -> int:
    return struct.unpack_from("<I", data, offset)[0]


# -- the layout ------------------------------------------------------------------------

def test_layout_follows_the_sample_boot_configuration() -> None:
    image = synthetic_bzimage(setup_sects=4)
    initrd = b"\x1f\x8b" + bytes(70000)
    layout = linux_real.real_mode_layout(image, RAM, "console=ttyS0", initrd)
    setup = layout.setup.data
    # The real-mode part at X = 0x10000, as the file has it, with the header filled in.
    assert layout.setup.address == 0x10000 and len(setup) == 5 * 512
    assert setup[0x202:0x206] == b"HdrS" and setup[:0x1F1] == image[:0x1F1]
    assert setup[0x210] == 0xFF  # type_of_loader: undefined loader id
    assert setup[0x211] == 0x81  # LOADED_HIGH (the file's) | CAN_USE_HEAP
    assert _u16(setup, 0x224) == 0xE000 - 0x200  # heap_end_ptr = heap_end - 0x200
    assert _u32(setup, 0x228) == 0x10000 + 0xE000  # cmd_line_ptr = base_ptr + heap_end
    assert _u32(setup, 0x214) == 0x100000  # code32_start
    # The command line at X+0xE000, NUL-terminated, below X+0x10000.
    assert layout.cmdline == linux_real.Piece(0x1E000, b"console=ttyS0\0")
    # The protected-mode kernel (file offset (setup_sects+1)*512) at 0x100000.
    assert layout.kernel == linux_real.Piece(0x100000, image[5 * 512:])
    # The initrd: page-aligned, below the RAM SeaBIOS keeps, named in the header.
    address = layout.initrd.address
    assert layout.initrd.data == initrd and address % 4096 == 0
    assert address + len(initrd) <= RAM - linux_real.SEABIOS_HIGH_ZONE
    assert address + len(initrd) > RAM - linux_real.SEABIOS_HIGH_ZONE - 4096
    assert (_u32(setup, 0x218), _u32(setup, 0x21C)) == (address, len(initrd))
    # boot.rst "Running the Kernel": the entry is segment X/16 + 0x20, offset 0.
    assert layout.entry_segment == 0x1020


def test_initrd_stays_below_initrd_addr_max() -> None:
    image = synthetic_bzimage(initrd_addr_max=0x37FFFFF)
    layout = linux_real.real_mode_layout(image, 128 * MIB, "", bytes(8192))
    assert layout.initrd.address + 8192 <= 0x3800000
    assert layout.initrd.address == 0x3800000 - 8192


def test_no_initrd_gives_empty_ramdisk_fields() -> None:
    layout = linux_real.real_mode_layout(synthetic_bzimage(), RAM)
    assert layout.initrd == linux_real.Piece(0, b"")
    assert _u32(layout.setup.data, 0x218) == _u32(layout.setup.data, 0x21C) == 0
    assert layout.cmdline.data == b"\0"


def _zimage() -> bytes:
    image = bytearray(synthetic_bzimage())
    image[0x211] = 0  # LOADED_HIGH clear
    return bytes(image)


@pytest.mark.parametrize(("image", "cmdline", "initrd", "error", "match"), [
    (synthetic_bzimage(version=0x0204), "", None, ImageError, "2.04 is too old"),
    (_zimage(), "", None, ImageError, "zImage"),
    (synthetic_bzimage(setup_sects=64), "", None, ImageError, "real-mode part is 33280"),
    (synthetic_bzimage()[:0x300], "", None, ImageError, "truncated"),
    (synthetic_bzimage(cmdline_size=16), "x" * 17, None, ConfigError, "cmdline_size is 16"),
    (synthetic_bzimage(cmdline_size=0x4000), "x" * 0x2000, None, ConfigError,
     "room for 8191"),
    (synthetic_bzimage(), "", bytes(RAM), ImageError, "initrd of"),
    (synthetic_bzimage(init_size=RAM), "", None, ImageError, "give more -m"),
], ids=["old-protocol", "zimage", "setup-too-big", "truncated", "cmdline-size",
        "cmdline-room", "initrd-too-big", "kernel-too-big"])
def test_bad_input_is_one_line(image, cmdline, initrd, error, match) -> None:
    with pytest.raises(error, match=match) as caught:
        linux_real.real_mode_layout(image, RAM, cmdline, initrd)
    assert "\n" not in str(caught.value)


# -- fw_cfg ------------------------------------------------------------------------------

def _fake_bios(tmp_path: Path) -> Path:
    path = tmp_path / "bios.bin"
    path.write_bytes(b"\xf4" * (128 * 1024))
    return path


def test_load_publishes_the_items_the_rom_and_the_boot_order(tmp_path: Path) -> None:
    board = make_board(RAM)
    try:
        image = synthetic_bzimage()
        state = linux_real.load_linux_real(board, image, "quiet", b"RAMDISK!",
                                           _fake_bios(tmp_path))
        fw = board.devices["fw_cfg"]
        layout = linux_real.real_mode_layout(image, RAM, "quiet", b"RAMDISK!")
        for name, (address_item, size_item, data_item) in linux_real.FW_CFG_PIECES.items():
            piece = getattr(layout, name)
            assert fw.items[address_item] == struct.pack("<I", piece.address), name
            assert fw.items[size_item] == struct.pack("<I", len(piece.data)), name
            assert fw.items[data_item] == piece.data, name
        assert fw.items[cfg.KERNEL_ADDR] == struct.pack("<I", 0x100000)
        assert fw.items[cfg.SETUP_ADDR] == struct.pack("<I", 0x10000)
        assert fw.items[cfg.CMDLINE_DATA] == b"quiet\0"
        assert fw.items[fw.files["genroms/linuxboot.bin"]] == LINUXBOOT_ROM.read_bytes()
        assert fw.items[fw.files["bootorder"]] == b"/rom@genroms/linuxboot.bin\n"
        # Through the guest's interface: the directory (be32 count; be32 size, be16
        # select, be16 reserved, name[56]) names the ROM with its size.
        fw.io_write(0, 2, cfg.FILE_DIR)
        directory = bytes(fw.io_read(1, 1) for _ in range(len(fw.items[cfg.FILE_DIR])))
        count = struct.unpack_from(">I", directory)[0]
        entries = {directory[4 + 64 * i + 8:4 + 64 * i + 64].rstrip(b"\0").decode():
                   struct.unpack_from(">IH", directory, 4 + 64 * i) for i in range(count)}
        rom_size, rom_select = entries["genroms/linuxboot.bin"]
        assert rom_size == len(LINUXBOOT_ROM.read_bytes())
        assert rom_select == fw.files["genroms/linuxboot.bin"]
        # The CPU starts at the reset vector, in the BIOS.
        assert board.bios_loaded
        assert (state.segments["cs"].base, state.rip) == (0xFFFF0000, 0xFFF0)
        # Nothing was written to RAM: the ROM copies it all at boot time.
        assert board.memory.read(0x100000, 16) == bytes(16)
    finally:
        board.close()


def test_a_bad_kernel_leaves_the_board_alone(tmp_path: Path) -> None:
    board = make_board(RAM)
    try:
        with pytest.raises(ImageError, match="zImage"):
            linux_real.load_linux_real(board, _zimage(), firmware=_fake_bios(tmp_path))
        assert not board.bios_loaded
        assert "genroms/linuxboot.bin" not in board.devices["fw_cfg"].files
    finally:
        board.close()


def test_firmware_is_seabios_unless_given(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ImageError, match="no such file"):
        linux_real.read_firmware(tmp_path / "absent.bin")
    monkeypatch.setattr(linux_real, "DEFAULT_FIRMWARE", tmp_path / "bios-256k.bin")
    with pytest.raises(ConfigError, match="bios-256k.bin is absent") as caught:
        linux_real.read_firmware(None)
    assert "\n" not in str(caught.value)
    (tmp_path / "bios-256k.bin").write_bytes(b"SEABIOS")
    assert linux_real.read_firmware(None) == b"SEABIOS"


# -- the option ROM ----------------------------------------------------------------------

def test_option_rom_header_and_checksum() -> None:
    """BBS 1.01 Appendix A: 55 AA, length in 512-byte blocks, init entry at 3, the
    PnP header's offset at 1Ah; all bytes sum to zero."""
    rom = LINUXBOOT_ROM.read_bytes()
    assert rom[:2] == b"\x55\xaa"
    assert rom[2] * 512 == len(rom)
    assert sum(rom) % 256 == 0
    assert _u16(rom, 0x18) == 0  # no PCI data structure: an ISA-style ROM
    init = next(iter(Decoder(16, rom[3:], ip=3)))
    assert init.mnemonic == Mnemonic.JMP and init.near_branch_target < len(rom)


def test_option_rom_pnp_header_has_a_bev() -> None:
    rom = LINUXBOOT_ROM.read_bytes()
    pnp = _u16(rom, 0x1A)
    header = rom[pnp:pnp + 32]
    assert header[:4] == b"$PnP"
    assert header[4] == 1 and header[5] == 2  # revision 1, 2 x 16 bytes
    assert _u16(header, 6) == 0  # no next header
    assert sum(header) % 256 == 0
    assert _u16(header, 0x16) == 0 and _u16(header, 0x18) == 0  # no BCV, no DV
    bev = _u16(header, 0x1A)
    assert 0 < bev < len(rom)
    product = _u16(header, 0x10)
    assert rom[product:rom.index(0, product)] == b"Linux (fw_cfg)"
    # boot.rst "Running the Kernel": interrupts off first.
    first = next(iter(Decoder(16, rom[bev:], ip=bev)))
    assert first.mnemonic == Mnemonic.CLI


@pytest.mark.skipif(shutil.which("nasm") is None or shutil.which("make") is None,
                    reason="rebuilding the ROM needs make and nasm")
def test_committed_rom_matches_a_rebuild(tmp_path: Path) -> None:
    done = subprocess.run(["make", "-s", "-C", str(REPO / "guests"), f"OUT={tmp_path}",
                           f"{tmp_path}/linuxboot.bin"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "linuxboot.bin").read_bytes() == LINUXBOOT_ROM.read_bytes(), \
        "run `make -C guests install`"


# -- the registry and the command line ---------------------------------------------------

def test_the_real_entry_is_firmware_booted() -> None:
    row = loader("linux")
    assert row.boots_firmware("real")
    assert not row.boots_firmware("64") and not row.boots_firmware("decompressed")
    assert loader("bios").boots_firmware("64")
    assert BootInputs().firmware is None


def test_cli_takes_bios_beside_kernel_for_the_real_entry(tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(synthetic_bzimage())
    bios = _fake_bios(tmp_path)
    parser = build_parser()
    args = parser.parse_args(["run", "--kernel", str(kernel), "--bios", str(bios),
                              "--linux-entry", "real"])
    spec = resolve_image(args)
    assert (spec.kind, spec.linux_entry, spec.firmware) == ("linux", "real", bios)
    args = parser.parse_args(["run", "--kernel", str(kernel), "--bios", str(bios)])
    with pytest.raises(ConfigError, match="give exactly one of"):
        resolve_image(args)


def test_run_help_says_what_the_real_entry_does(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "real: SeaBIOS" in text and "16-bit real-mode setup code" in text
