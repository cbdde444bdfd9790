"""`monitor` commands for gdb (qRcmd): looking at the machine, not the program.

The page-table listing reads the guest's paging structures in the mode that
CR0/CR4/EFER select (SDM Vol. 3A §4.1.1, the shapes of pyvmm's PageWalker)
and changes nothing in them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pyvmm.cpu.state import CR0_PG, CpuState
from pyvmm.engines.interp.mmu import PTE_P, PTE_PS, PTE_RW, PTE_US, PTE_XD, paging_shape
from pyvmm.errors import PyvmmError
from pyvmm.machine.memory import GuestMemory, GuestMemoryError

MAX_LINES = 2000  # a guest's page tables can map millions of pages


@dataclass
class Mapping:
    linear: int
    physical: int
    size: int
    writable: bool
    user: bool
    executable: bool

    def flags(self) -> str:
        return ("r" + ("w" if self.writable else "-") + ("x" if self.executable else "-")
                + ("u" if self.user else "s"))


def mappings(memory: GuestMemory, state: CpuState) -> Iterator[Mapping]:
    """Every page the current page tables map, in linear-address order."""
    shape = paging_shape(state.cr4, state.efer)
    size = shape.entry_size
    address_mask = ((1 << 52) - 1) & ~0xFFF if shape.wide_entries else 0xFFFFF000
    root = state.cr3 & (address_mask if shape.root_mask == 0 else shape.root_mask)
    sign_bit = 1 << (shape.linear_bits - 1)

    def walk(table: int, depth: int, linear: int, writable: bool, user: bool,
             executable: bool) -> Iterator[Mapping]:
        level = shape.levels[depth]
        for index in range(1 << level.index_bits):
            try:
                entry = memory.read_int(table + index * size, size)
            except GuestMemoryError:
                return
            if not entry & PTE_P:
                continue
            here = linear | (index << level.shift)
            rights = (writable and (not level.has_rights or bool(entry & PTE_RW)),
                      user and (not level.has_rights or bool(entry & PTE_US)),
                      executable and not (shape.wide_entries and level.has_rights
                                          and entry & PTE_XD))
            if level.is_last or (level.may_map_page and entry & PTE_PS):
                page = 1 << level.shift
                if shape.linear_bits == 48 and here & sign_bit:
                    here |= ~((1 << 48) - 1) & ((1 << 64) - 1)  # canonical form
                yield Mapping(here, entry & address_mask & ~(page - 1), page, *rights)
            else:
                yield from walk(entry & address_mask, depth + 1, here, *rights)

    yield from walk(root, 0, 0, True, True, True)


def _ranges(items: Iterator[Mapping]) -> Iterator[tuple[int, int, str]]:
    """Adjacent pages with the same rights merged: (start, end, flags)."""
    start = end = None
    flags = ""
    for item in items:
        if start is not None and item.linear == end and item.flags() == flags:
            end += item.size
            continue
        if start is not None:
            yield start, end, flags
        start, end, flags = item.linear, item.linear + item.size, item.flags()
    if start is not None:
        yield start, end, flags


def _limited(lines: Iterator[str]) -> str:
    out = []
    for count, line in enumerate(lines):
        if count == MAX_LINES:
            out.append(f"... (more than {MAX_LINES} lines)")
            break
        out.append(line)
    return "\n".join(out) + "\n"


def format_registers(state: CpuState) -> str:
    lines = [" ".join(f"{name}={value:016x}" for name, value in
                      zip(("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi"),
                          state.gprs[:8], strict=True)),
             " ".join(f"r{i}={state.gprs[i]:016x}" for i in range(8, 16)),
             f"rip={state.rip:016x} rflags={state.rflags:08x} cpl={state.cpl}"]
    for name, seg in state.segments.items():
        lines.append(f"{name}={seg.selector:04x} base={seg.base:016x} limit={seg.limit:08x} "
                     f"type={seg.type:x} s={seg.s} dpl={seg.dpl} p={seg.present} "
                     f"db={seg.db} l={seg.l} g={seg.g}")
    lines += [f"ldtr={state.ldtr.selector:04x} base={state.ldtr.base:x}  "
              f"tr={state.tr.selector:04x} base={state.tr.base:x}",
              f"gdt={state.gdtr.base:x}/{state.gdtr.limit:x} "
              f"idt={state.idtr.base:x}/{state.idtr.limit:x}",
              f"cr0={state.cr0:x} cr2={state.cr2:x} cr3={state.cr3:x} cr4={state.cr4:x} "
              f"cr8={state.cr8:x} efer={state.efer:x} apic_base={state.apic_base:x}"]
    return "\n".join(lines) + "\n"


def run_monitor_command(command: str, target, vm, help_text: str) -> str:  # noqa: ANN001
    """The text gdb prints for `monitor COMMAND`."""
    words = command.split()
    state = target.state
    if not words or words[0] == "help":
        return help_text
    if words[:2] == ["info", "registers"]:
        return format_registers(state)
    if words[:2] in (["info", "mem"], ["info", "tlb"]):
        if not state.cr0 & CR0_PG:
            return "paging is off: linear addresses are physical\n"
        pages = mappings(target.memory, state)
        if words[1] == "tlb":
            return _limited(f"{m.linear:016x} -> {m.physical:012x} {m.size >> 10:>7} KiB "
                            f"{m.flags()}" for m in pages)
        return _limited(f"{start:016x}-{end:016x} {end - start:016x} {flags}"
                        for start, end, flags in _ranges(pages))
    if words[0].startswith("xp"):
        count = int(words[0][3:] or "16", 0) if words[0].startswith("xp/") else 16
        if len(words) != 2 or not 0 < count <= 4096:
            return "usage: xp/N ADDR (N at most 4096)\n"
        address = int(words[1], 0)
        data = target.read_physical(address, count)
        return "".join(f"{address + i:012x}: {data[i:i + 16].hex(' ')}\n"
                       for i in range(0, len(data), 16))
    if words[0] == "stats":
        return vm.stats.format() + "\n"
    if words[0] == "snapshot" and len(words) == 2:
        from pyvmm.snapshot import take_snapshot

        saved = target.breakpoints
        target.remove_all()  # a snapshot holds the guest's bytes, not our INT3s
        target._commit()
        try:
            snapshot = take_snapshot(vm)
            snapshot.save(words[1])
        except (OSError, PyvmmError) as error:
            return f"snapshot not saved: {error}\n"
        finally:
            for linear in saved:
                target.insert_breakpoint(linear)
        return f"snapshot saved to {words[1]} ({snapshot.describe()})\n"
    return f"unknown monitor command {command!r}\n" + help_text
