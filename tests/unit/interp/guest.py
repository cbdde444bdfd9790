"""Helpers for interpreter unit tests: assemble a snippet with nasm, run it.

`long_mode_state()` builds a flat 64-bit machine without running any setup code:
identity-mapped 2 MiB pages (4-level paging), a GDT with ring-0/ring-3 code and
data segments, a TSS (RSP0, IST1), and an IDT whose gates the test fills in.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from pyvmm.cpu.state import (
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    CpuState,
    SegmentState,
)
from pyvmm.engines.interp.engine import InterpreterEngine
from tests.conformance.machine import BareBoard

HAVE_NASM = shutil.which("nasm") is not None

PML4, PDPT, PD = 0x10000, 0x11000, 0x12000
GDT, IDT, TSS = 0x13000, 0x14000, 0x15000
KERNEL_STACK, IST_STACK, USER_STACK = 0x80000, 0x90000, 0x70000
KCODE, KDATA, UCODE, UDATA, TSS_SEL = 0x08, 0x10, 0x1B, 0x23, 0x28


def assemble(source: str, origin: int, bits: int = 64) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "s.asm"
        out = Path(tmp) / "s.bin"
        src.write_text(f"bits {bits}\norg {origin:#x}\n{source}\n")
        subprocess.run(["nasm", "-f", "bin", "-o", str(out), str(src)], check=True)
        return out.read_bytes()


def machine(ram: int = 4 << 20) -> tuple[BareBoard, InterpreterEngine]:
    board = BareBoard(ram)
    return board, InterpreterEngine(board)


def _code_desc(dpl: int) -> int:
    # present, S=1, type=0xB (code, read, accessed), L=1, G=1, limit 0xFFFFF
    return 0x00AF9B000000FFFF | (dpl << 45)


def _data_desc(dpl: int) -> int:
    return 0x00CF93000000FFFF | (dpl << 45)


def set_gate(board: BareBoard, vector: int, handler: int, dpl: int = 0, ist: int = 0,
             trap: bool = False) -> None:
    """A 64-bit interrupt (or trap) gate in the IDT (SDM Vol. 3A Figure 6-8)."""
    lo = (handler & 0xFFFF) | (KCODE << 16) | (ist << 32) | ((0xF if trap else 0xE) << 40) \
        | (dpl << 45) | (1 << 47) | (((handler >> 16) & 0xFFFF) << 48)
    board.memory.write_u64(IDT + 16 * vector, lo)
    board.memory.write_u64(IDT + 16 * vector + 8, handler >> 32)


def long_mode_state(board: BareBoard, rip: int, user: bool = False) -> CpuState:
    mem = board.memory
    mem.write_u64(PML4, PDPT | 0x7)
    mem.write_u64(PDPT, PD | 0x7)
    for i in range(4):  # 8 MiB identity, 2 MiB pages, user-accessible, writable
        mem.write_u64(PD + 8 * i, (i << 21) | 0x87)
    gdt = [0, _code_desc(0), _data_desc(0), _code_desc(3), _data_desc(3)]
    for i, d in enumerate(gdt):
        mem.write_u64(GDT + 8 * i, d)
    # 64-bit TSS descriptor (type 0xB busy) at 0x28.
    limit = 0x67
    mem.write_u64(GDT + 0x28, limit | ((TSS & 0xFFFFFF) << 16) | (0x8B << 40)
                  | (((TSS >> 24) & 0xFF) << 56))
    mem.write_u64(GDT + 0x30, TSS >> 32)
    mem.write_u64(TSS + 4, KERNEL_STACK)  # RSP0
    mem.write_u64(TSS + 0x24, IST_STACK)  # IST1
    state = CpuState()
    state.cr0 = CR0_PE | CR0_PG | 0x10
    state.cr4 = CR4_PAE
    state.cr3 = PML4
    state.efer = EFER_LME | EFER_LMA
    state.gdtr.base, state.gdtr.limit = GDT, 0x37
    state.idtr.base, state.idtr.limit = IDT, 0xFFF
    state.tr = SegmentState(selector=TSS_SEL, base=TSS, limit=limit, type=0xB, s=0)
    dpl = 3 if user else 0
    state.segments["cs"] = SegmentState.flat64_code(UCODE if user else KCODE, dpl=dpl)
    for name in ("ds", "es", "ss", "fs", "gs"):
        state.segments[name] = SegmentState.flat32(UDATA if user else KDATA, code=False,
                                                   dpl=dpl)
    state.rip = rip
    state.gprs[4] = USER_STACK if user else KERNEL_STACK - 0x1000
    return state
