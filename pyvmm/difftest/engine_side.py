"""Run an encoded block through a pyvmm engine on a `PcBoard`.

The guest sees exactly the native layout: code at CODE_BASE, data at
DATA_BASE, guest-physical = guest-linear.  The CPU starts at CPL 0 with IF=0
so the trailing HLT stops the engine (StopKind.HALTED), and every exception
vector is intercepted (StopKind.EXCEPTION, RIP at the faulting instruction).

  64-bit: long mode, 4-level paging (SDM Vol. 3A §4.5) mapping only the code
          and data pages, 4 KiB pages, like the native process.
  32-bit: flat protected mode with 32-bit paging (SDM Vol. 3A §4.3), ditto.
  compat: 32-bit code in IA-32e compatibility mode (Vol. 3A §5.2.1, §9.8.5): the
          64-bit set-up (EFER.LMA, 4-level paging) with a flat code segment of
          L=0, D=1.
  16-bit: protected mode, no paging, 16-bit CS with base CODE_BASE and 16-bit
          DS/ES/SS/FS/GS with base DATA_BASE, limit 0xFFFF (as the LDT segments
          the native runner installs).
"""

from __future__ import annotations

from pyvmm.board.pc import MIB, PcBoard
from pyvmm.cpu.state import (
    CR0_ET,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_OSFXSR,
    CR4_OSXMMEXCPT,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    CpuState,
    SegmentState,
)
from pyvmm.difftest import simd
from pyvmm.difftest.encode import EncodedCase
from pyvmm.machine.stop import StopKind
from pyvmm.oracle.layout import CODE_BASE, CODE_SIZE, DATA_BASE, DATA_SIZE
from pyvmm.oracle.result import ExecResult

PAGE = 0x1000
PTE_P = 1 << 0  # present
PTE_RW = 1 << 1  # writable
PTE_US = 1 << 2  # user accessible
PTE_FLAGS = PTE_P | PTE_RW | PTE_US

TABLES = 0x1000  # page tables live in low RAM, outside every mapped page
CODE_SEL, DATA_SEL = 0x08, 0x10
RAM_SIZE = 4 * MIB


def _mapped_pages() -> list[int]:
    return list(range(CODE_BASE, CODE_BASE + CODE_SIZE, PAGE)) + \
        list(range(DATA_BASE, DATA_BASE + DATA_SIZE, PAGE))


def write_long_mode_tables(board: PcBoard) -> int:
    """PML4 -> PDPT -> PD -> PT identity-mapping the code and data pages; returns CR3."""
    pml4, pdpt, pd, pt = TABLES, TABLES + PAGE, TABLES + 2 * PAGE, TABLES + 3 * PAGE
    mem = board.memory
    mem.write(TABLES, bytes(4 * PAGE))
    pages = _mapped_pages()
    assert all(p >> 21 == pages[0] >> 21 for p in pages), "areas must share one 2 MiB region"
    mem.write_u64(pml4, pdpt | PTE_FLAGS)
    mem.write_u64(pdpt, pd | PTE_FLAGS)
    mem.write_u64(pd + 8 * (pages[0] >> 21 & 0x1FF), pt | PTE_FLAGS)
    for page in pages:
        mem.write_u64(pt + 8 * (page >> 12 & 0x1FF), page | PTE_FLAGS)
    return pml4


def write_32bit_tables(board: PcBoard) -> int:
    """Page directory -> page table identity-mapping the code and data pages; returns CR3."""
    pd, pt = TABLES, TABLES + PAGE
    mem = board.memory
    mem.write(TABLES, bytes(2 * PAGE))
    pages = _mapped_pages()
    assert all(p >> 22 == pages[0] >> 22 for p in pages), "areas must share one 4 MiB region"
    mem.write_u32(pd + 4 * (pages[0] >> 22), pt | PTE_FLAGS)
    for page in pages:
        mem.write_u32(pt + 4 * (page >> 12 & 0x3FF), page | PTE_FLAGS)
    return pd


def initial_state(enc: EncodedCase, cr3: int) -> CpuState:
    case = enc.case
    state = CpuState()
    state.gprs = [g & 0xFFFFFFFFFFFFFFFF for g in case.gprs]
    state.rflags = case.rflags
    state.rip = enc.code_ip
    if case.mode == 64 or case.compat:
        state.cr0 = CR0_PE | CR0_PG | CR0_ET | CR0_NE | CR0_WP
        state.cr4 = CR4_PAE
        state.efer = EFER_LME | EFER_LMA
        state.cr3 = cr3
        code = SegmentState.flat32(CODE_SEL, code=True) if case.compat else \
            SegmentState.flat64_code(CODE_SEL)
        data = SegmentState.flat32(DATA_SEL, code=False)
    elif case.mode == 32:
        state.cr0 = CR0_PE | CR0_PG | CR0_ET | CR0_NE | CR0_WP
        state.cr3 = cr3
        code = SegmentState.flat32(CODE_SEL, code=True)
        data = SegmentState.flat32(DATA_SEL, code=False)
    else:
        state.cr0 = CR0_PE | CR0_ET | CR0_NE
        code = SegmentState(selector=CODE_SEL, base=CODE_BASE, limit=0xFFFF, type=0xB)
        data = SegmentState(selector=DATA_SEL, base=DATA_BASE, limit=0xFFFF, type=0x3)
    state.cr4 |= CR4_OSFXSR | CR4_OSXMMEXCPT  # as Linux runs the native side
    state.segments = {"cs": code}
    for name in ("ds", "es", "ss", "fs", "gs"):
        state.segments[name] = SegmentState(**vars(data))
    return state


class EngineSide:
    """One board reused for every block; a fresh engine per block."""

    def __init__(self, engine_class: type, timeout: float = 10.0) -> None:
        self.engine_class = engine_class
        self.board = PcBoard(ram_size=RAM_SIZE)
        self.timeout = timeout

    def run(self, enc: EncodedCase) -> ExecResult:
        case = enc.case
        board = self.board
        mem = board.memory
        mem.write(CODE_BASE, enc.engine_code + b"\xcc" * (CODE_SIZE - len(enc.engine_code)))
        mem.write(DATA_BASE, case.data)
        cr3 = 0
        if case.mode == 64 or case.compat:
            cr3 = write_long_mode_tables(board)
        elif case.mode == 32:
            cr3 = write_32bit_tables(board)
        board.stop_request = None
        engine = self.engine_class(board)
        if hasattr(engine, "hot_after"):
            engine.hot_after = 1  # the JIT translates code that runs once: test that
        try:
            engine.intercept_exceptions = set(range(32))
            engine.set_state(initial_state(enc, cr3))
            if case.fxsave is not None:
                _load_simd(engine.cpu, case.fxsave)
            try:
                reason = engine.run(timeout=self.timeout)
                state = engine.get_state()
                fxsave = _save_simd(engine.cpu) if case.fxsave is not None else b""
            except Exception as error:  # an engine bug is a finding, not a crash
                return ExecResult(list(case.gprs), case.rflags, -1, mem.read(DATA_BASE, DATA_SIZE),
                                  note=f"engine raised {type(error).__name__}: {error}")
        finally:
            engine.close()
        data = mem.read(DATA_BASE, DATA_SIZE)
        gprs = list(state.gprs)
        if reason.kind is StopKind.HALTED:
            note = "" if state.rip == enc.trailer_ip + 1 else \
                f"halted with RIP {state.rip:#x}, expected {enc.trailer_ip + 1:#x}"
            return ExecResult(gprs, state.rflags, enc.trailer_ip, data, note=note,
                              fxsave=fxsave)
        if reason.kind is StopKind.EXCEPTION:
            return ExecResult(gprs, state.rflags, state.rip, data, vector=reason.vector,
                              error_code=reason.error_code,
                              fault_address=state.cr2 if reason.vector == 14 else None,
                              fxsave=fxsave)
        return ExecResult(gprs, state.rflags, state.rip, data, timed_out=reason.kind is
                          StopKind.TIMEOUT, note=f"engine stopped: {reason.describe()}")


def _load_simd(cpu, image: bytes) -> None:  # noqa: ANN001
    cpu.mxcsr = simd.mxcsr_of(image)
    cpu.xmm[:] = [simd.xmm_of(image, i) for i in range(16)]
    for i in range(8):
        cpu.fpu.mmx_write(i, simd.mm_of(image, i))


def _save_simd(cpu) -> bytes:  # noqa: ANN001
    return simd.state_image(cpu.mxcsr, [cpu.fpu.mmx_read(i) for i in range(8)], list(cpu.xmm))
