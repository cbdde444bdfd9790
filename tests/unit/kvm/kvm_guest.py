"""Helpers for the KVM engine tests: assemble tiny guests, build boards, set up modes."""

from __future__ import annotations

import io
import os
import subprocess
import tempfile

import pytest

from pyvmm.board.pc import PcBoard
from pyvmm.cpu.state import (
    CR0_ET,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    EFER_SCE,
    FLAG_IOPL,
    FLAG_RESERVED1,
    CpuState,
    SegmentState,
    TableRegister,
)
from pyvmm.engines.kvm import KvmEngine

_available, _reason = KvmEngine.availability() if os.path.exists("/dev/kvm") else (
    False, "/dev/kvm does not exist")

requires_kvm = pytest.mark.skipif(not _available, reason=f"KVM unavailable: {_reason}")


def assemble(source: str) -> bytes:
    """Assemble NASM source as a flat binary (`nasm -f bin`)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "guest.asm")
        out = os.path.join(tmp, "guest.bin")
        with open(src, "w") as f:
            f.write(source)
        result = subprocess.run(["nasm", "-f", "bin", "-o", out, src], capture_output=True,
                                text=True)
        if result.returncode:
            raise RuntimeError(f"nasm failed:\n{result.stderr}")
        with open(out, "rb") as f:
            return f.read()


class Vm:
    """A board, its debugcon capture and a KVM engine, closed together."""

    def __init__(self, irqchip: str = "kernel") -> None:
        self.debugcon = io.BytesIO()
        self.board = PcBoard(ram_size=4 << 20, debugcon_output=self.debugcon)
        self.engine = KvmEngine(self.board, irqchip=irqchip)

    def close(self) -> None:
        self.engine.close()
        self.board.close()


# -- guest setup helpers ------------------------------------------------------


PML4 = 0x1000
GDT = 0x500
CODE_BASE = 0x10000
STACK_TOP = 0x80000

# GDT: null, 64-bit ring-0 code (0x08), ring-0 data (0x10), 64-bit ring-3 code
# (0x18), ring-3 data (0x20) (SDM Vol. 3A §3.4.5 descriptor layout).
GDT_ENTRIES = (0, 0x00209A0000000000, 0x00CF92000000FFFF, 0x0020FA0000000000,
               0x00CFF2000000FFFF)


def real_mode_state(entry: int) -> CpuState:
    """Real mode, CS=0, IP=entry, SS:SP = 0:0x7000."""
    state = CpuState()
    state.rip = entry
    state.segments["cs"] = SegmentState.real_mode(0, code=True)
    state.set_gpr("rsp", 0x7000)
    return state


def load_real_mode(vm: Vm, source: str, entry: int = 0x7C00) -> None:
    vm.board.memory.write(entry, assemble(f"bits 16\norg {entry:#x}\n" + source))
    vm.engine.set_state(real_mode_state(entry))


def write_page_tables(vm: Vm) -> None:
    """Identity-map the first 2 MiB with one 2 MiB page, user-accessible
    (4-level paging, SDM Vol. 3A §4.5: PML4E -> PDPTE -> PDE with PS=1)."""
    mem = vm.board.memory
    mem.write_u64(PML4, (PML4 + 0x1000) | 0x7)  # present, writable, user
    mem.write_u64(PML4 + 0x1000, (PML4 + 0x2000) | 0x7)
    mem.write_u64(PML4 + 0x2000, 0x0 | 0x87)  # 2 MiB page at 0
    for i, descriptor in enumerate(GDT_ENTRIES):
        mem.write_u64(GDT + 8 * i, descriptor)


def long_mode_state(entry: int, ring: int = 0) -> CpuState:
    """64-bit mode entered directly: paging on, EFER.LME|LMA, L=1 code segment."""
    state = CpuState()
    state.cr0 = CR0_PE | CR0_PG | CR0_ET | CR0_NE
    state.cr3 = PML4
    state.cr4 = CR4_PAE
    state.efer = EFER_LME | EFER_LMA | EFER_SCE
    state.gdtr = TableRegister(GDT, 8 * len(GDT_ENTRIES) - 1)
    state.idtr = TableRegister(0, 0)
    code_sel, data_sel = (0x08, 0x10) if ring == 0 else (0x1B, 0x23)
    state.segments["cs"] = SegmentState.flat64_code(code_sel, dpl=ring)
    data = SegmentState.flat32(data_sel, code=False, dpl=ring)
    for name in ("ds", "es", "ss", "fs", "gs"):
        state.segments[name] = SegmentState(**vars(data))
    state.tr = SegmentState(selector=0, base=0, limit=0x67, type=0xB, s=0, present=1)
    state.ldtr = SegmentState(selector=0, limit=0xFFFF, type=0x2, s=0, present=1)
    state.rip = entry
    state.set_gpr("rsp", STACK_TOP)
    state.rflags = FLAG_RESERVED1 | (FLAG_IOPL if ring == 3 else 0)
    return state


def load_long_mode(vm: Vm, source: str, ring: int = 0, entry: int = CODE_BASE) -> None:
    write_page_tables(vm)
    vm.board.memory.write(entry, assemble(f"bits 64\norg {entry:#x}\n" + source))
    vm.engine.set_state(long_mode_state(entry, ring))
