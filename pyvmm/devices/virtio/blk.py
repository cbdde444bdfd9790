"""virtio-blk (Virtio 1.2 §5.2) backed by a raw image file.

A request is a descriptor chain: a 16-byte device-readable header {type
u32, reserved u32, sector u64}, the data buffers, and a last device-writable
status byte (§5.2.6).  Sectors are 512 bytes whatever the block size.

- IN (0) reads, OUT (1) writes, FLUSH (4) is an fsync of the image file, so
  a write the guest has flushed is on the host's disk; GET_ID (8) returns
  the 20-byte serial; DISCARD (11) punches a hole (a hint; nothing is lost
  if the host cannot); WRITE_ZEROES (13) writes zeros.
- A request beyond the end of the disk, a write to a read-only disk, a data
  length that is not a multiple of 512: status IOERR, nothing touched.
  An unknown type: UNSUPP.
- Data moves in pieces of at most CHUNK bytes: a request describing 4 GiB
  never makes the host allocate 4 GiB.

cache=writeback (the default) uses the host page cache and relies on the
guest's flushes; cache=none opens the image O_DSYNC, so every write is on
the disk before it completes (QEMU's cache=none bypasses the page cache with
O_DIRECT instead; both need no flush to be durable for a completed write).
"""

from __future__ import annotations

import os
from pathlib import Path

from pyvmm.devices.virtio.device import VirtioDevice
from pyvmm.devices.virtio.queue import Chain, QueueError, SplitQueue
from pyvmm.devices.virtio.spec import DEVICE_BLOCK
from pyvmm.errors import ConfigError
from pyvmm.machine.memory import GuestMemory
from pyvmm.stats import Stats

SECTOR = 512
CHUNK = 1 << 20
QUEUE_SIZE = 256

T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES = 0, 1, 4, 8, 11, 13
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2

F_SEG_MAX = 1 << 2
F_RO = 1 << 5
F_BLK_SIZE = 1 << 6
F_FLUSH = 1 << 9
F_DISCARD = 1 << 13
F_WRITE_ZEROES = 1 << 14

MAX_RANGE_SECTORS = (1 << 32) - 1
_REQUEST_NAMES = {T_IN: "read", T_OUT: "write", T_FLUSH: "flush", T_GET_ID: "get-id",
                  T_DISCARD: "discard", T_WRITE_ZEROES: "write-zeroes"}


class RawImage:
    """The backing file: pread/pwrite at byte offsets, fsync on flush."""

    def __init__(self, path: Path, readonly: bool, cache: str = "writeback") -> None:
        if cache not in ("writeback", "none"):
            raise ConfigError(f"drive cache={cache}: expected writeback or none")
        flags = os.O_RDONLY if readonly else os.O_RDWR
        if cache == "none" and not readonly:
            flags |= os.O_DSYNC
        try:
            self.fd = os.open(path, flags | os.O_CLOEXEC)
        except OSError as error:
            raise ConfigError(f"drive {path}: {error.strerror}") from None
        import stat

        info = os.fstat(self.fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(self.fd)
            raise ConfigError(f"drive {path}: not a regular file")
        self.path = path
        self.readonly = readonly
        self.size = info.st_size

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        return data + bytes(length - len(data))

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            done = os.pwrite(self.fd, view, offset)
            view, offset = view[done:], offset + done

    def flush(self) -> None:
        os.fsync(self.fd)

    def discard(self, offset: int, length: int) -> None:
        """Punch a hole (fallocate(2) PUNCH_HOLE|KEEP_SIZE); a hint, so failure is fine."""
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate(self.fd, 0x02 | 0x01, ctypes.c_long(offset), ctypes.c_long(length))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class VirtioBlock(VirtioDevice):
    device_id = DEVICE_BLOCK
    name = "virtio-blk"
    queue_sizes = (QUEUE_SIZE,)
    iothread_safe = True  # the image file and guest memory only

    def __init__(self, memory: GuestMemory, image: RawImage, serial: str = "pyvmm-disk",
                 stats: Stats | None = None) -> None:
        self.image = image
        self.serial = serial.encode()[:20]
        self.device_features = (F_SEG_MAX | F_BLK_SIZE | F_FLUSH | F_DISCARD | F_WRITE_ZEROES
                                | (F_RO if image.readonly else 0))
        super().__init__(memory, stats)

    @property
    def capacity(self) -> int:
        return self.image.size // SECTOR

    def config_bytes(self) -> bytes:
        """struct virtio_blk_config (§5.2.4), up to write_zeroes_may_unmap."""
        config = bytearray(60)
        config[0:8] = self.capacity.to_bytes(8, "little")
        config[12:16] = (QUEUE_SIZE - 2).to_bytes(4, "little")  # seg_max: minus header/status
        config[20:24] = SECTOR.to_bytes(4, "little")  # blk_size
        limit = min(MAX_RANGE_SECTORS, CHUNK * 64 // SECTOR)
        config[36:40] = limit.to_bytes(4, "little")  # max_discard_sectors
        config[40:44] = (1).to_bytes(4, "little")  # max_discard_seg
        config[44:48] = (1).to_bytes(4, "little")  # discard_sector_alignment
        config[48:52] = limit.to_bytes(4, "little")  # max_write_zeroes_sectors
        config[52:56] = (1).to_bytes(4, "little")  # max_write_zeroes_seg
        return bytes(config)

    def serve(self, index: int, queue: SplitQueue) -> None:
        while (chain := queue.pop()) is not None:
            written, status = self._request(queue, chain)
            if not chain.writable or chain.writable[-1].length < 1:
                raise QueueError("virtio-blk request without a writable status byte")
            last = chain.writable[-1]
            self.memory.write(last.address + last.length - 1, bytes((status,)))
            queue.push(chain, written + 1)

    def _request(self, queue: SplitQueue, chain: Chain) -> tuple[int, int]:
        """Carry out one request: (data bytes written to the guest, status)."""
        header = queue.read_chain(chain, 16)
        if len(header) < 16:
            raise QueueError("virtio-blk request header shorter than 16 bytes")
        kind = int.from_bytes(header[0:4], "little")
        sector = int.from_bytes(header[8:16], "little")
        self.stats.count("virtio-blk", _REQUEST_NAMES.get(kind, "unsupported"))
        data_in = _after(chain.readable, 16)  # device-readable data after the header
        data_out = _without_last_byte(chain.writable)  # device-writable data before status
        try:
            if kind == T_IN:
                return self._read(sector, data_out)
            if kind == T_OUT:
                return 0, self._write(sector, data_in)
            if kind == T_FLUSH:
                self.image.flush()
                return 0, S_OK
            if kind == T_GET_ID:
                return _scatter(self.memory, data_out, self.serial.ljust(20, b"\0")), S_OK
            if kind in (T_DISCARD, T_WRITE_ZEROES):
                return 0, self._ranges(kind, _gather(self.memory, data_in, 16))
        except OSError:
            self.stats.count("virtio-blk", "host I/O error")
            return 0, S_IOERR
        return 0, S_UNSUPP

    def _in_range(self, sector: int, length: int) -> bool:
        return length % SECTOR == 0 and sector * SECTOR + length <= self.image.size

    def _read(self, sector: int, buffers: list[tuple[int, int]]) -> tuple[int, int]:
        length = sum(n for _, n in buffers)
        if not self._in_range(sector, length):
            self.stats.count("virtio-blk", "out of range")
            return 0, S_IOERR
        offset = sector * SECTOR
        for address, size in buffers:
            for start in range(0, size, CHUNK):
                piece = min(CHUNK, size - start)
                self.memory.write(address + start, self.image.read(offset, piece))
                offset += piece
        return length, S_OK

    def _write(self, sector: int, buffers: list[tuple[int, int]]) -> int:
        length = sum(n for _, n in buffers)
        if self.image.readonly:
            self.stats.count("virtio-blk", "write to read-only disk")
            return S_IOERR
        if not self._in_range(sector, length):
            self.stats.count("virtio-blk", "out of range")
            return S_IOERR
        offset = sector * SECTOR
        for address, size in buffers:
            for start in range(0, size, CHUNK):
                piece = min(CHUNK, size - start)
                self.image.write(offset, self.memory.read(address + start, piece))
                offset += piece
        return S_OK

    def _ranges(self, kind: int, segment: bytes) -> int:
        """One {sector u64, num_sectors u32, flags u32} segment (max_*_seg = 1)."""
        if len(segment) < 16:
            return S_IOERR
        sector = int.from_bytes(segment[0:8], "little")
        count = int.from_bytes(segment[8:12], "little")
        if self.image.readonly:
            return S_IOERR
        if not self._in_range(sector, count * SECTOR):
            return S_IOERR
        if kind == T_DISCARD:
            self.image.discard(sector * SECTOR, count * SECTOR)
            return S_OK
        offset, left = sector * SECTOR, count * SECTOR
        zeros = bytes(min(CHUNK, left))
        while left:
            piece = min(CHUNK, left)
            self.image.write(offset, zeros[:piece])
            offset, left = offset + piece, left - piece
        return S_OK

    def get_state(self) -> dict:
        self.image.flush()  # a snapshot holds nothing the disk does not
        return super().get_state()


def _after(buffers, skip: int) -> list[tuple[int, int]]:  # noqa: ANN001
    out = []
    for buffer in buffers:
        if skip >= buffer.length:
            skip -= buffer.length
            continue
        out.append((buffer.address + skip, buffer.length - skip))
        skip = 0
    return out


def _without_last_byte(buffers) -> list[tuple[int, int]]:  # noqa: ANN001
    out = [(b.address, b.length) for b in buffers]
    if out:
        address, length = out[-1]
        out[-1] = (address, length - 1)
        if not out[-1][1]:
            out.pop()
    return out


def _gather(memory: GuestMemory, buffers: list[tuple[int, int]], limit: int) -> bytes:
    out = bytearray()
    for address, size in buffers:
        take = min(size, limit - len(out))
        if take <= 0:
            break
        out += memory.read(address, take)
    return bytes(out)


def _scatter(memory: GuestMemory, buffers: list[tuple[int, int]], data: bytes) -> int:
    done = 0
    for address, size in buffers:
        take = min(size, len(data) - done)
        if take <= 0:
            break
        memory.write(address, data[done:done + take])
        done += take
    return done
