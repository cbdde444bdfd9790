"""QEMU's firmware configuration device (QEMU docs/specs/fw_cfg.rst), x86 I/O flavour.

Ports:
    0x510  selector (16-bit write): picks an item and rewinds its data offset
    0x511  data (8-bit read): the next byte of the selected item
    0x514  DMA address, big-endian 64-bit: a 32-bit write to 0x514 sets the
           high half, one to 0x518 the low half and starts the transfer

A read of the DMA port returns the big-endian signature "QEMU CFG", which
is how firmware detects the DMA interface (with bit 1 of the ID item).

DMA works on an FWCfgDmaAccess structure in guest memory:
    be32 control (error 0x01, read 0x02, skip 0x04, select 0x08 with the
    selector in bits 31:16, write 0x10), be32 length, be64 address.
When the transfer is done the device writes control back: 0, or the error
bit.  Any transfer touching memory outside RAM ends with the error bit; a
structure outside RAM is ignored.  Writes are not supported (no writable
items), so they also set the error bit.

Items: the fixed selectors below, and files (from 0x0020) listed in the
directory at 0x0019 (be32 count, then per file be32 size, be16 select,
be16 reserved, char name[56]).  Reading past an item's end, or selecting
an item that does not exist, reads zeros; the latter is counted.
"""

from __future__ import annotations

import struct

from pyvmm.machine.memory import GuestMemory
from pyvmm.schema import EMPTY, U16, U32, Int, Record
from pyvmm.stats import Stats

PORT_FW_CFG = 0x510
FW_CFG_PORTS = 2  # selector 0x510 (16-bit), data 0x511
PORT_FW_CFG_DMA = 0x514
FW_CFG_DMA_PORTS = 8

SIGNATURE = 0x0000
ID = 0x0001
UUID = 0x0002
RAM_SIZE = 0x0003
NOGRAPHIC = 0x0004
NB_CPUS = 0x0005
KERNEL_ADDR = 0x0007
KERNEL_SIZE = 0x0008
KERNEL_CMDLINE = 0x0009
INITRD_ADDR = 0x000A
INITRD_SIZE = 0x000B
BOOT_DEVICE = 0x000C
MAX_CPUS = 0x000F
KERNEL_ENTRY = 0x0010
KERNEL_DATA = 0x0011
INITRD_DATA = 0x0012
CMDLINE_ADDR = 0x0013
CMDLINE_SIZE = 0x0014
CMDLINE_DATA = 0x0015
SETUP_ADDR = 0x0016
SETUP_SIZE = 0x0017
SETUP_DATA = 0x0018
FILE_DIR = 0x0019
FILE_FIRST = 0x0020
FILE_NAME_SIZE = 56

ID_TRADITIONAL = 1 << 0
ID_DMA = 1 << 1
DMA_SIGNATURE = 0x51454D5520434647  # "QEMU CFG"

DMA_ERROR = 0x01
DMA_READ = 0x02
DMA_SKIP = 0x04
DMA_SELECT = 0x08
DMA_WRITE = 0x10
DMA_ACCESS_SIZE = 16
DMA_ZERO_PIECE = 1 << 20  # the most zero bytes one DMA read allocates at once

FW_CFG_STATE = Record({"selector": U16, "offset": Int(0, 1 << 32), "dma_high": U32})


class FwCfg:
    """The item store and both interfaces."""

    def __init__(self, memory: GuestMemory, stats: Stats | None = None) -> None:
        self.memory = memory
        self.stats = stats if stats is not None else Stats()
        self.items: dict[int, bytes] = {}
        self.files: dict[str, int] = {}
        self.selector = 0
        self.offset = 0
        self._dma_high = 0
        self.add(SIGNATURE, b"QEMU")
        self.add(ID, struct.pack("<I", ID_TRADITIONAL | ID_DMA))
        self._update_directory()

    # -- items ------------------------------------------------------------------
    def add(self, selector: int, data: bytes) -> None:
        self.items[selector] = bytes(data)

    def add_u16(self, selector: int, value: int) -> None:
        self.add(selector, struct.pack("<H", value))

    def add_u32(self, selector: int, value: int) -> None:
        self.add(selector, struct.pack("<I", value))

    def add_u64(self, selector: int, value: int) -> None:
        self.add(selector, struct.pack("<Q", value))

    def add_file(self, name: str, data: bytes) -> int:
        encoded = name.encode()
        if len(encoded) >= FILE_NAME_SIZE:
            raise ValueError(f"fw_cfg file name too long: {name}")
        selector = self.files.get(name)
        if selector is None:
            selector = FILE_FIRST + len(self.files)
            self.files[name] = selector
        self.add(selector, data)
        self._update_directory()
        return selector

    def _update_directory(self) -> None:
        entries = [struct.pack(">IHH56s", len(self.items[sel]), sel, 0, name.encode())
                   for name, sel in sorted(self.files.items())]
        self.items[FILE_DIR] = struct.pack(">I", len(entries)) + b"".join(entries)

    def _item(self) -> bytes:
        return self.items.get(self.selector, b"")

    def select(self, selector: int) -> None:
        self.selector = selector & 0xFFFF
        self.offset = 0
        if self.selector not in self.items:
            self.stats.count("fw_cfg", "absent selector")

    # -- the I/O interface ----------------------------------------------------------
    def io_read(self, offset: int, size: int) -> int:
        if offset == 0:
            return self.selector if size == 2 else (1 << (8 * size)) - 1
        value = 0
        data = self._item()
        for i in range(size):  # QEMU's data port: one byte per access byte
            if self.offset < len(data):
                value |= data[self.offset] << (8 * i)
            self.offset += 1
        return value

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset == 0 and size == 2:
            self.select(value)
        else:
            self.stats.count("fw_cfg", "ignored write")

    # -- snapshot -------------------------------------------------------------------
    def get_state(self) -> dict:
        return {"selector": self.selector, "offset": self.offset, "dma_high": self._dma_high}

    def set_state(self, state: dict) -> None:
        FW_CFG_STATE.check(state)
        self.selector, self.offset = state["selector"], state["offset"]
        self._dma_high = state["dma_high"]

    # -- DMA ----------------------------------------------------------------------
    def dma_transfer(self, address: int) -> None:
        """Run the FWCfgDmaAccess at guest-physical `address`."""
        if not self.memory.is_mapped(address, DMA_ACCESS_SIZE) or \
                self.memory.region_at(address, DMA_ACCESS_SIZE).readonly:
            self.stats.count("fw_cfg", "dma structure outside RAM")
            return
        control, length, target = struct.unpack(">IIQ",
                                                self.memory.read(address, DMA_ACCESS_SIZE))
        if control & DMA_SELECT:
            self.select(control >> 16)
        result = 0
        if control & DMA_WRITE:
            result = DMA_ERROR
            self.stats.count("fw_cfg", "dma write refused")
        elif control & (DMA_READ | DMA_SKIP):
            if control & DMA_READ and length:
                region = self.memory.region_at(target, length)
                if region is None or region.readonly:
                    result = DMA_ERROR
                    self.stats.count("fw_cfg", "dma outside RAM")
                else:
                    self._dma_read(target, length)
            if not result:
                self.offset += length
        self.memory.write(address, struct.pack(">I", result))


    def _dma_read(self, target: int, length: int) -> None:
        """The item's bytes from the current offset to RAM at `target`, zeros past its
        end; the zeros are written a bounded piece at a time, so a guest-chosen
        32-bit length never makes the host allocate more than DMA_ZERO_PIECE."""
        data = self._item()
        chunk = data[self.offset:self.offset + length]
        self.memory.write(target, chunk)
        done = len(chunk)
        while done < length:
            piece = min(length - done, DMA_ZERO_PIECE)
            self.memory.write(target + done, bytes(piece))
            done += piece


class FwCfgDma:
    """Ports 0x514-0x51B: the DMA address register pair."""

    def __init__(self, fw_cfg: FwCfg) -> None:
        self.fw_cfg = fw_cfg

    def io_read(self, offset: int, size: int) -> int:
        raw = DMA_SIGNATURE.to_bytes(8, "big")[offset:offset + size]
        return int.from_bytes(raw, "little")

    def io_write(self, offset: int, size: int, value: int) -> None:
        if size != 4 or offset not in (0, 4):
            self.fw_cfg.stats.count("fw_cfg", "ignored write")
            return
        be = int.from_bytes(value.to_bytes(4, "little"), "big")
        if offset == 0:
            self.fw_cfg._dma_high = be
        else:
            address, self.fw_cfg._dma_high = (self.fw_cfg._dma_high << 32) | be, 0
            self.fw_cfg.dma_transfer(address)

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        EMPTY.check(state)
