"""Where a loader may put bytes: guest RAM, checked before anything is written.

A loader validates every range it is about to fill against the board's
memory layout first, so a bad image fails with one clear `ImageError` and
leaves guest memory untouched.  ROM regions (readonly) do not count as RAM:
an image that lands in them would be silently lost at the first guest write.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyvmm.errors import ImageError
from pyvmm.machine.memory import GuestMemory


@dataclass(frozen=True)
class Chunk:
    """One range a loader fills: `data` at `gpa`, then zeros up to `memsz` bytes."""

    gpa: int
    data: bytes
    memsz: int
    what: str  # e.g. "ELF segment 1 (file offset 0x1000)" for error messages

    @property
    def end(self) -> int:
        return self.gpa + self.memsz

    def overlaps(self, start: int, end: int) -> bool:
        return self.gpa < end and start < self.end


def describe_ram(memory: GuestMemory) -> str:
    """The RAM ranges of `memory`, for error messages: "0x0-0x9ffff, 0x100000-0x3ffffff"."""
    spans = [f"{r.gpa:#x}-{r.end - 1:#x}" for r in memory.regions if not r.readonly]
    return ", ".join(spans) if spans else "none"


def require_ram(memory: GuestMemory, gpa: int, length: int, what: str) -> None:
    """Fail unless [gpa, gpa+length) lies inside one writable RAM region."""
    if length <= 0:
        return
    region = memory.region_at(gpa, length)
    if region is None or region.readonly:
        span = f"{gpa:#x}" if length == 1 else f"{gpa:#x}-{gpa + length - 1:#x}"
        raise ImageError(f"{what} at {span} does not fit in guest RAM ({describe_ram(memory)})")


def write_chunks(memory: GuestMemory, chunks: list[Chunk]) -> None:
    """Check every chunk against RAM, then write them all (data, then zero fill)."""
    for chunk in chunks:
        require_ram(memory, chunk.gpa, chunk.memsz, chunk.what)
    for chunk in chunks:
        if chunk.data:
            memory.load_rom_bytes(chunk.gpa, chunk.data)
        fill = chunk.memsz - len(chunk.data)
        if fill > 0:
            memory.load_rom_bytes(chunk.gpa + len(chunk.data), bytes(fill))
