"""A PCI function's 256-byte configuration space (PCI Local Bus Spec. 3.0 ch. 6).

`PciFunction` holds the type-0 header (§6.1, Figure 6-1): the read-only
identification registers, the command/status registers, up to six BARs,
the interrupt line/pin, and a capability list (§6.7).  Which bits the guest
may change is a per-byte write mask, as in hardware where the other bits
are hard-wired; BAR sizing falls out of that: a BAR's address bits below
its size are hard-wired to zero, so writing all ones and reading back gives
~(size - 1) | type bits (§6.2.5.1).

When the guest reprograms a BAR or toggles the I/O or memory enable bit of
the command register, `on_bar_change(function, index, old, new)` is called
with the old and new decoded base (None when not decoded) so that the board
moves the device's range on its port or MMIO bus.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pyvmm.schema import Bits, HexBytes, Record

CONFIG_SIZE = 256

# Type-0 header offsets (PCI 3.0 §6.1).
VENDOR_ID = 0x00
DEVICE_ID = 0x02
COMMAND = 0x04
STATUS = 0x06
REVISION = 0x08
CLASS_CODE = 0x09  # 3 bytes: programming interface, subclass, base class
HEADER_TYPE = 0x0E
BAR0 = 0x10
BAR_COUNT = 6
SUBSYSTEM_VENDOR_ID = 0x2C
SUBSYSTEM_ID = 0x2E
CAPABILITIES_POINTER = 0x34
INTERRUPT_LINE = 0x3C
INTERRUPT_PIN = 0x3D
FIRST_CAPABILITY = 0x40

COMMAND_IO = 1 << 0  # I/O space enable (§6.2.2)
COMMAND_MEMORY = 1 << 1
COMMAND_MASTER = 1 << 2
COMMAND_INTX_DISABLE = 1 << 10
STATUS_CAPABILITIES = 1 << 4  # the capability list exists (§6.2.3)
HEADER_MULTIFUNCTION = 0x80

BAR_IO = 0x1  # bit 0 of an I/O BAR (§6.2.5.1)
BAR_MEM_64 = 0x4  # memory BAR type 10b: 64-bit
BAR_MEM_PREFETCH = 0x8

# Snapshot shape: the 256 configuration bytes.
PCI_FUNCTION_STATE = Record({"config": HexBytes(CONFIG_SIZE)})

CAP_MSI = 0x05  # capability IDs (PCI Code and ID Assignment Spec.)
MSI_CONTROL_ENABLE = 1 << 0
MSI_CONTROL_64BIT = 1 << 7


@dataclass
class Bar:
    """One base address register: `size` bytes (a power of two) of I/O or memory."""

    index: int
    size: int
    io: bool
    is_64: bool = False
    prefetchable: bool = False

    @property
    def type_bits(self) -> int:
        if self.io:
            return BAR_IO
        return (BAR_MEM_64 if self.is_64 else 0) | (BAR_MEM_PREFETCH if self.prefetchable else 0)

    @property
    def address_mask(self) -> int:
        width = 64 if self.is_64 else 32
        return ((1 << width) - 1) & ~(self.size - 1)


class ConfigClient(Protocol):
    def config_read(self, offset: int, size: int) -> int: ...
    def config_write(self, offset: int, size: int, value: int) -> None: ...


BarCallback = Callable[["PciFunction", int, "int | None", "int | None"], None]


class PciFunction:
    """A type-0 configuration header; chipset functions subclass it.

    Subclasses describe their registers by calling `make_writable` and
    override `config_written(offset, size)` to act on writes.
    """

    name = "pci-function"

    def __init__(self, vendor: int, device: int, class_code: int, revision: int = 0,
                 multifunction: bool = False, interrupt_pin: int = 0) -> None:
        self.config = bytearray(CONFIG_SIZE)
        self.wmask = bytearray(CONFIG_SIZE)
        self.bars: dict[int, Bar] = {}
        self.on_bar_change: BarCallback | None = None
        self._decoded: dict[int, int | None] = {}
        self._next_capability = FIRST_CAPABILITY
        self._last_capability: int | None = None
        self._set(VENDOR_ID, 2, vendor)
        self._set(DEVICE_ID, 2, device)
        self._set(REVISION, 1, revision)
        self._set(CLASS_CODE, 3, class_code)
        self._set(HEADER_TYPE, 1, HEADER_MULTIFUNCTION if multifunction else 0)
        self._set(INTERRUPT_PIN, 1, interrupt_pin)
        self.make_writable(COMMAND, 2, COMMAND_IO | COMMAND_MEMORY | COMMAND_MASTER
                           | COMMAND_INTX_DISABLE)
        self.make_writable(INTERRUPT_LINE, 1, 0xFF)

    # -- layout ---------------------------------------------------------------
    def _set(self, offset: int, size: int, value: int) -> None:
        self.config[offset:offset + size] = value.to_bytes(size, "little")

    def _get(self, offset: int, size: int) -> int:
        return int.from_bytes(self.config[offset:offset + size], "little")

    def make_writable(self, offset: int, size: int, mask: int) -> None:
        self.wmask[offset:offset + size] = mask.to_bytes(size, "little")

    def add_bar(self, bar: Bar) -> None:
        """Declare BAR `bar.index` (a 64-bit BAR also takes the next register)."""
        if bar.size & (bar.size - 1) or bar.size < (4 if bar.io else 16):
            raise ValueError(f"BAR size must be a power of two (>= 4/16): {bar.size}")
        offset = BAR0 + 4 * bar.index
        self.bars[bar.index] = bar
        self._decoded[bar.index] = None
        width = 8 if bar.is_64 else 4
        self._set(offset, width, bar.type_bits)
        self.make_writable(offset, width, bar.address_mask)

    def add_capability(self, cap_id: int, body: bytes, wmask: bytes = b"") -> int:
        """Append a capability (§6.7): [id, next, body...]; returns its offset."""
        length = 2 + len(body)
        offset = self._next_capability
        if offset + length > CONFIG_SIZE:
            raise ValueError("configuration space full")
        self.config[offset] = cap_id
        self.config[offset + 1] = 0
        self.config[offset + 2:offset + length] = body
        self.wmask[offset + 2:offset + 2 + len(wmask)] = wmask
        if self._last_capability is None:
            self.config[CAPABILITIES_POINTER] = offset
        else:
            self.config[self._last_capability + 1] = offset
        self._last_capability = offset
        self._next_capability = (offset + length + 3) & ~3
        self._set(STATUS, 2, self._get(STATUS, 2) | STATUS_CAPABILITIES)
        return offset

    def capabilities(self) -> list[tuple[int, int]]:
        """(id, offset) of each capability, walking the list as software does."""
        found = []
        offset = self.config[CAPABILITIES_POINTER] if self._get(STATUS, 2) \
            & STATUS_CAPABILITIES else 0
        while offset and len(found) < 48:
            found.append((self.config[offset], offset))
            offset = self.config[offset + 1] & ~3
        return found

    # -- guest access -----------------------------------------------------------
    def config_read(self, offset: int, size: int) -> int:
        return self._get(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            mask = self.wmask[offset + i]
            byte = (value >> (8 * i)) & 0xFF
            self.config[offset + i] = (self.config[offset + i] & ~mask) | (byte & mask)
        self.config_written(offset, size)
        if offset < BAR0 + 4 * BAR_COUNT and offset + size > COMMAND:
            self.update_bars()

    def config_written(self, offset: int, size: int) -> None:
        """Hook for subclasses: registers [offset, offset+size) were written."""

    # -- BAR decoding -----------------------------------------------------------
    def bar_address(self, index: int) -> int | None:
        """The base the function decodes for BAR `index`, or None (§6.2.2, §6.2.5.1):
        None while the space's enable bit is clear, at address 0, or while the
        BAR holds the sizing pattern (all address bits one)."""
        bar = self.bars[index]
        command = self._get(COMMAND, 2)
        if not command & (COMMAND_IO if bar.io else COMMAND_MEMORY):
            return None
        width = 8 if bar.is_64 else 4
        address = self._get(BAR0 + 4 * index, width) & bar.address_mask
        if bar.io:
            address &= 0xFFFF & ~(bar.size - 1)
            limit = 1 << 16
        else:
            limit = 1 << (64 if bar.is_64 else 32)
        if address == 0 or address == bar.address_mask or address + bar.size > limit:
            return None
        return address

    def update_bars(self) -> None:
        for index in self.bars:
            new = self.bar_address(index)
            old = self._decoded[index]
            if new != old:
                self._decoded[index] = new
                if self.on_bar_change is not None:
                    self.on_bar_change(self, index, old, new)

    def decoded_bars(self) -> dict[int, int | None]:
        return dict(self._decoded)

    # -- snapshot ---------------------------------------------------------------
    def get_state(self) -> dict:
        return {"config": self.config.hex()}

    def restore_config(self, saved: bytes) -> None:
        """Take the guest-writable bits from `saved`; the hard-wired bits stay
        this model's, so no snapshot can change a function's identity."""
        for i, byte in enumerate(saved):
            mask = self.wmask[i]
            self.config[i] = (self.config[i] & ~mask) | (byte & mask)

    def set_state(self, state: dict) -> None:
        PCI_FUNCTION_STATE.check(state)
        self.restore_config(bytes.fromhex(state["config"]))
        self.update_bars()


class MsiCapability:
    """The MSI capability (PCI 3.0 §6.8.1) with a 64-bit message address.

    Layout after the header: message control (2), address low (4), address
    high (4), data (2).  A device raises an interrupt with `message()`: the
    (address, data) pair the guest programmed, or None while MSI is disabled,
    so the interrupt goes to INTx instead.
    """

    def __init__(self, function: PciFunction) -> None:
        body = (MSI_CONTROL_64BIT).to_bytes(2, "little") + bytes(10)
        wmask = (MSI_CONTROL_ENABLE | (0x7 << 4)).to_bytes(2, "little") + \
            (0xFFFFFFFC).to_bytes(4, "little") + b"\xff" * 4 + b"\xff\xff"
        self.function = function
        self.offset = function.add_capability(CAP_MSI, body, wmask)

    def _field(self, delta: int, size: int) -> int:
        return self.function.config_read(self.offset + delta, size)

    @property
    def enabled(self) -> bool:
        return bool(self._field(2, 2) & MSI_CONTROL_ENABLE)

    def message(self) -> tuple[int, int] | None:
        if not self.enabled:
            return None
        address = self._field(4, 4) | (self._field(8, 4) << 32)
        return address, self._field(12, 2)


CAP_MSIX = 0x11
MSIX_CONTROL_FUNCTION_MASK = 1 << 14
MSIX_CONTROL_ENABLE = 1 << 15
MSIX_ENTRY_SIZE = 16
MSIX_VECTOR_MASKED = 1 << 0  # Vector Control bit 0 (the per-vector mask)
MSIX_MAX_VECTORS = 2048

# Writable bits of each byte of a table entry: address bits 1:0 read as zero,
# vector control has only the mask bit (§6.8.2.9; reserved bits read 0 here).
_MSIX_ENTRY_WMASK = bytes([0xFC, 0xFF, 0xFF, 0xFF] + [0xFF] * 8 + [MSIX_VECTOR_MASKED, 0, 0, 0])

MsiSink = Callable[[int, int], None]  # (message address, message data)


class MsixCapability:
    """MSI-X (PCI 3.0 §6.8.2): a table of vectors and a Pending Bit Array in a BAR.

    The capability: Message Control (table size N-1 in bits 10:0, read only;
    Function Mask bit 14; MSI-X Enable bit 15), Table Offset/BIR and PBA
    Offset/BIR (BAR indicator in bits 2:0, QWORD-aligned offset above).  Each
    table entry is 16 bytes: message address (bits 1:0 read as zero), upper
    address, data, vector control (bit 0 the mask, set at reset, §6.8.2.9).
    Software accesses the table and PBA with aligned DWORD or QWORD accesses
    (§6.8.2); any other access is ignored and counted.  The PBA is read only.

    A vector signalled while masked (by its own mask or the function mask)
    sets its pending bit; when it is unmasked with the bit set, the message
    is sent and the bit cleared (§6.8.2.9, §6.8.2.10).  While MSI-X is
    enabled the function must not use INTx# (`enabled`).
    """

    def __init__(self, function: PciFunction, vectors: int, bar: int, table_offset: int,
                 pba_offset: int, deliver: MsiSink, count: Callable[[str], None]) -> None:
        if not 1 <= vectors <= MSIX_MAX_VECTORS or table_offset % 8 or pba_offset % 8:
            raise ValueError("MSI-X: 1-2048 vectors, QWORD-aligned table and PBA")
        self.function = function
        self.vectors = vectors
        self.table_offset = table_offset
        self.pba_offset = pba_offset
        self.deliver = deliver
        self.count = count
        body = (vectors - 1).to_bytes(2, "little") + (table_offset | bar).to_bytes(4, "little") \
            + (pba_offset | bar).to_bytes(4, "little")
        wmask = (MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK).to_bytes(2, "little")
        self.offset = function.add_capability(CAP_MSIX, body, wmask)
        self.reset()

    def reset(self) -> None:
        self.table = bytearray(MSIX_ENTRY_SIZE * self.vectors)
        for vector in range(self.vectors):
            self.table[vector * MSIX_ENTRY_SIZE + 12] = MSIX_VECTOR_MASKED
        self.pending = 0

    @property
    def table_size(self) -> int:
        return MSIX_ENTRY_SIZE * self.vectors

    @property
    def pba_size(self) -> int:
        return (self.vectors + 63) // 64 * 8

    @property
    def _control(self) -> int:
        return self.function.config_read(self.offset + 2, 2)

    @property
    def enabled(self) -> bool:
        return bool(self._control & MSIX_CONTROL_ENABLE)

    def _entry(self, vector: int, field: int) -> int:
        start = vector * MSIX_ENTRY_SIZE + field
        return int.from_bytes(self.table[start:start + 4], "little")

    def masked(self, vector: int) -> bool:
        return bool(self._control & MSIX_CONTROL_FUNCTION_MASK
                    or self._entry(vector, 12) & MSIX_VECTOR_MASKED)

    def message(self, vector: int) -> tuple[int, int]:
        return self._entry(vector, 0) | (self._entry(vector, 4) << 32), self._entry(vector, 8)

    def signal(self, vector: int) -> bool:
        """The function raises `vector`: send it, or hold it pending while masked.
        False when MSI-X is disabled or `vector` is not in the table."""
        if not self.enabled or not 0 <= vector < self.vectors:
            return False
        if self.masked(vector):
            self.pending |= 1 << vector
        else:
            self.deliver(*self.message(vector))
        return True

    def _send_unmasked_pending(self) -> None:
        if not self.enabled:
            return
        for vector in range(self.vectors):
            if self.pending >> vector & 1 and not self.masked(vector):
                self.pending &= ~(1 << vector)
                self.deliver(*self.message(vector))

    def control_written(self) -> None:
        """Message Control was written: a cleared function mask sends what is pending."""
        self._send_unmasked_pending()

    # -- the BAR side -----------------------------------------------------------------
    def _aligned(self, offset: int, size: int) -> bool:
        if size in (4, 8) and offset % size == 0:
            return True
        self.count("MSI-X table or PBA access not an aligned DWORD or QWORD")
        return False

    def table_read(self, offset: int, size: int) -> int:
        if not self._aligned(offset, size) or offset + size > self.table_size:
            return 0
        return int.from_bytes(self.table[offset:offset + size], "little")

    def table_write(self, offset: int, size: int, value: int) -> None:
        if not self._aligned(offset, size) or offset + size > self.table_size:
            return
        data = bytearray(value.to_bytes(size, "little"))
        for i in range(size):
            data[i] &= _MSIX_ENTRY_WMASK[(offset + i) % MSIX_ENTRY_SIZE]
        self.table[offset:offset + size] = data
        self._send_unmasked_pending()

    def pba_read(self, offset: int, size: int) -> int:
        if not self._aligned(offset, size) or offset + size > self.pba_size:
            return 0
        return (self.pending >> (8 * offset)) & ((1 << (8 * size)) - 1)

    def pba_write(self, offset: int, size: int, value: int) -> None:
        self.count("MSI-X PBA write (read only)")

    # -- snapshot ------------------------------------------------------------------------
    def get_state(self) -> dict:
        return {"table": self.table.hex(), "pending": self.pending}

    def set_state(self, state: dict) -> None:
        Record({"table": HexBytes(self.table_size), "pending": Bits(self.vectors)}).check(state)
        table = bytes.fromhex(state["table"])
        self.table = bytearray(a & m for a, m in zip(
            table, _MSIX_ENTRY_WMASK * self.vectors, strict=True))
        self.pending = state["pending"]
