"""fw_cfg per QEMU's docs/specs/fw_cfg.rst: selector 0x510, data 0x511, DMA at
0x514 (big-endian address, "QEMU CFG" signature), the "QEMU" signature item,
the ID feature bits and the big-endian file directory at selector 0x19."""

from __future__ import annotations

import struct

import pytest

from pyvmm.board.pc import PcBoard
from pyvmm.devices.fw_cfg import FILE_DIR, FwCfg, FwCfgDma
from pyvmm.machine.clock import ClockSource
from pyvmm.machine.memory import GuestMemory
from pyvmm.schema import StateError

SELECTOR, DATA, DMA = 0x510, 0x511, 0x514
CTL_ERROR, CTL_READ, CTL_SKIP, CTL_SELECT, CTL_WRITE = 0x01, 0x02, 0x04, 0x08, 0x10


@pytest.fixture
def fw():
    memory = GuestMemory()
    memory.add_region("ram", 0, 1 << 20)
    memory.add_region("rom", 1 << 20, 1 << 16, readonly=True)
    fw = FwCfg(memory)
    return fw


def read_item(fw: FwCfg, selector: int, length: int) -> bytes:
    fw.io_write(0, 2, selector)
    return bytes(fw.io_read(1, 1) for _ in range(length))


def test_signature_and_id(fw):
    assert read_item(fw, 0x0000, 4) == b"QEMU"
    ident = struct.unpack("<I", read_item(fw, 0x0001, 4))[0]
    assert ident & 1 and ident & 2  # traditional interface and DMA


def test_selector_write_rewinds_and_reads_past_the_end_are_zero(fw):
    assert read_item(fw, 0, 2) == b"QE"
    assert read_item(fw, 0, 6) == b"QEMU\0\0"
    assert read_item(fw, 0x7FFF, 2) == b"\0\0"  # no such item
    assert fw.stats.counters["fw_cfg"]["absent selector"] == 1


def test_file_directory_is_big_endian_and_sorted(fw):
    a = fw.add_file("etc/zeta", b"z" * 3)
    b = fw.add_file("bootorder", b"/pci@i0cf8/*@1\n")
    directory = read_item(fw, FILE_DIR, 4 + 2 * 64)
    assert struct.unpack(">I", directory[:4])[0] == 2
    entries = [struct.unpack(">IHH56s", directory[4 + 64 * i:4 + 64 * (i + 1)])
               for i in range(2)]
    assert [(size, sel, name.rstrip(b"\0")) for size, sel, _, name in entries] == \
        [(15, b, b"bootorder"), (3, a, b"etc/zeta")]
    assert min(a, b) >= 0x20
    assert read_item(fw, a, 3) == b"zzz"


def dma(fw: FwCfg, access: int, control: int, length: int, target: int) -> int:
    fw.memory.write(access, struct.pack(">IIQ", control, length, target))
    port = FwCfgDma(fw)
    # The guest writes the address big-endian: high dword at 0x514, low at 0x518.
    port.io_write(0, 4, int.from_bytes((access >> 32).to_bytes(4, "big"), "little"))
    port.io_write(4, 4, int.from_bytes((access & 0xFFFFFFFF).to_bytes(4, "big"), "little"))
    return struct.unpack(">I", fw.memory.read(access, 4))[0]


def test_dma_signature_port():
    fw = FwCfg(GuestMemory())
    port = FwCfgDma(fw)
    raw = b"".join(port.io_read(i, 1).to_bytes(1, "little") for i in range(8))
    assert raw == b"QEMU CFG"


def test_dma_select_skip_and_read(fw):
    selector = fw.add_file("etc/data", bytes(range(32)))
    assert dma(fw, 0x1000, selector << 16 | CTL_SELECT | CTL_SKIP, 8, 0) == 0
    assert dma(fw, 0x1000, CTL_READ, 4, 0x2000) == 0
    assert fw.memory.read(0x2000, 4) == bytes([8, 9, 10, 11])
    # Past the end: zeros, still no error.
    assert dma(fw, 0x1000, CTL_READ, 24, 0x3000) == 0
    assert fw.memory.read(0x3000, 24) == bytes(range(12, 32)) + bytes(4)


def test_dma_errors(fw):
    selector = fw.add_file("etc/data", b"abcd")
    # Into ROM: the error bit, nothing written.
    assert dma(fw, 0x1000, selector << 16 | CTL_SELECT | CTL_READ, 4, 1 << 20) == CTL_ERROR
    assert fw.memory.read(1 << 20, 4) == bytes(4)
    # Writes to items are not supported.
    assert dma(fw, 0x1000, CTL_WRITE, 4, 0x2000) == CTL_ERROR
    # An access structure outside RAM is ignored, not a crash.
    FwCfgDma(fw).io_write(4, 4, int.from_bytes((0x4000_0000).to_bytes(4, "big"), "little"))
    assert fw.stats.counters["fw_cfg"]["dma structure outside RAM"] == 1


def test_state_is_checked(fw):
    with pytest.raises(StateError, match="selector"):
        fw.set_state({"selector": 1 << 16, "offset": 0, "dma_high": 0})


def test_board_offers_ram_size_e820_and_sercon():
    board = PcBoard(ram_size=32 << 20, clock_source=ClockSource.MANUAL)
    board.ports.write(SELECTOR, 2, 0x0000)
    assert bytes(board.ports.read(DATA, 1) for _ in range(4)) == b"QEMU"
    fw = board.fw_cfg
    assert struct.unpack("<Q", read_item(fw, 0x0003, 8))[0] == 32 << 20
    assert struct.unpack("<H", read_item(fw, 0x0005, 2))[0] == 1  # one CPU
    e820 = fw.items[fw.files["etc/e820"]]
    entries = [struct.unpack("<QQI", e820[i:i + 20]) for i in range(0, len(e820), 20)]
    assert entries == [(e.base, e.length, e.type) for e in board.e820_map()]
    assert (0x100000, (32 << 20) - 0x100000, 1) in entries
    assert fw.items[fw.files["etc/sercon-port"]] == b"\xf8\x03"  # COM1
