"""The board's PCI chipset through its ports: config mechanism #1 at 0xCF8,
i440FX PAM shadow RAM over the BIOS alias (82441FX §3.2.14), the PIIX4 PM
block moved by PMBA and S5 power-off as a documented exit status."""

from __future__ import annotations

from pyvmm.board.pc import PcBoard
from pyvmm.machine.clock import ClockSource
from pyvmm.machine.stop import StopKind
from tests.unit.test_cli import run_pyvmm

CF8, CFC = 0xCF8, 0xCFC


def board_with_rom() -> PcBoard:
    board = PcBoard(ram_size=4 << 20, clock_source=ClockSource.MANUAL)
    rom = bytes((i * 7) & 0xFF for i in range(128 * 1024))
    board.map_bios(rom)
    board.rom = rom
    return board


def cfg_write(board: PcBoard, device: int, function: int, register: int, size: int,
              value: int) -> None:
    board.ports.write(CF8, 4, 1 << 31 | device << 11 | function << 8 | (register & ~3))
    board.ports.write(CFC + (register & 3), size, value)


def cfg_read(board: PcBoard, device: int, function: int, register: int, size: int) -> int:
    board.ports.read(CF8, 4)
    board.ports.write(CF8, 4, 1 << 31 | device << 11 | function << 8 | (register & ~3))
    return board.ports.read(CFC + (register & 3), size)


def test_chipset_functions_answer_where_firmware_looks():
    board = board_with_rom()
    assert cfg_read(board, 0, 0, 0, 4) == 0x12378086  # i440FX
    assert cfg_read(board, 1, 0, 0, 4) == 0x70008086  # PIIX3 ISA
    assert cfg_read(board, 1, 3, 0, 4) == 0x71138086  # PIIX4 PM
    assert cfg_read(board, 2, 0, 0, 4) == 0xFFFFFFFF  # empty slot


def test_pam_shadowing_of_the_bios_segment():
    board = board_with_rom()
    mem = board.memory
    # Reset: PAM disabled, 0xF0000 reads the ROM and writes are dropped.
    assert mem.read(0xF0000, 16) == board.rom[0x10000:0x10010]
    mem.write(0xF0000, b"\x55")
    assert mem.read(0xF0000, 1) == board.rom[0x10000:0x10001]
    # RE|WE (PAM0 = 0x30): DRAM; firmware copies itself there from the 4 GiB alias.
    cfg_write(board, 0, 0, 0x59, 1, 0x30)
    mem.write(0xF0000, mem.read(0xFFFF0000, 0x10000))
    mem.write(0xF0010, b"patched")
    assert mem.read(0xF0010, 7) == b"patched"
    # RE only (0x10): the shadow copy reads back, writes are dropped.
    cfg_write(board, 0, 0, 0x59, 1, 0x10)
    mem.write(0xF0010, b"XXXXXXX")
    assert mem.read(0xF0010, 7) == b"patched"
    assert mem.read(0xF0000, 16) == board.rom[0x10000:0x10010]
    # Back to disabled: the ROM again; the shadow keeps its contents.
    cfg_write(board, 0, 0, 0x59, 1, 0x00)
    assert mem.read(0xF0010, 7) == board.rom[0x10010:0x10017]
    cfg_write(board, 0, 0, 0x59, 1, 0x10)
    assert mem.read(0xF0010, 7) == b"patched"


def test_pm_block_follows_pmba_and_s5_stops_the_vm():
    board = board_with_rom()
    cfg_write(board, 1, 3, 0x40, 4, 0x0000B000)
    cfg_write(board, 1, 3, 0x80, 1, 1)
    board.clock.advance(1_000_000_000)
    assert board.ports.read(0xB008, 4) == 3_579_545  # PMTMR at PMBA + 8
    cfg_write(board, 1, 3, 0x40, 4, 0x0000B040)  # moved: the old block is gone
    assert board.ports.read(0xB048, 4) == 3_579_545
    assert board.ports.read(0xB008, 4) != 3_579_545
    assert board.stop_request is None
    board.ports.write(0xB044, 2, 1 << 13)  # PM1_CNT: SLP_EN with SLP_TYP 0 (S5)
    assert board.stop_request.kind is StopKind.POWER_OFF
    assert board.stop_request.exit_code == 26


def test_power_off_status_is_free_and_documented():
    codes = [kind.exit_code for kind in StopKind if kind.exit_code is not None]
    assert len(codes) == len(set(codes))
    assert StopKind.POWER_OFF.exit_code % 2 == 0  # never a guest debug-exit status
    result = run_pyvmm("run", "--help")
    lines = result.stdout.decode().splitlines()
    assert any(line.split()[:1] == ["26"] and "S5" in line for line in lines)


def test_snapshot_keeps_the_shadow_ram_and_its_mapping(tmp_path):
    from pyvmm.snapshot import restore_snapshot, take_snapshot
    from pyvmm.vm import ImageSpec, VirtualMachine

    rom = bytes((i * 7) & 0xFF for i in range(128 * 1024))
    (tmp_path / "rom.bin").write_bytes(rom)
    vm = VirtualMachine(engine="interp", ram_size=4 << 20)
    vm.load(ImageSpec("bios", tmp_path / "rom.bin"))
    cfg_write(vm.board, 0, 0, 0x59, 1, 0x30)
    vm.board.memory.write(0xF0010, b"patched")
    cfg_write(vm.board, 0, 0, 0x59, 1, 0x10)
    restored = restore_snapshot(take_snapshot(vm))
    try:
        memory = restored.board.memory
        assert memory.read(0xF0010, 7) == b"patched"
        assert memory.region_at(0xF0000).readonly  # still read-only shadow
        assert memory.read(0xE0000, 4) == rom[0:4]  # unshadowed: the ROM alias
    finally:
        restored.close()
        vm.close()
