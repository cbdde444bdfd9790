"""System-level interpreter behaviour: segment-base MSRs and SWAPGS, the MOV SS
shadow, real-mode 66/67 prefixes, SMSW/LMSW/CLTS/SGDT/SIDT/STR/MOV DR,
RDTSC and CPUID, fixed MSRs, compatibility-mode far transfers, 32-bit IDT
privilege change, TLB invalidation of the CPU's fast page dicts, CMPXCHG8B,
and counting of unsupported instructions.

Expected values come from the SDM's definitions worked out by hand (cited per
test), never from running the interpreter.
"""

from __future__ import annotations

import pytest

from pyvmm.cpu.state import CR0_TS, CpuState, SegmentState
from pyvmm.engines.interp.engine import InterpreterEngine
from pyvmm.engines.jit.engine import JitEngine
from pyvmm.machine.stop import StopKind
from tests.conformance.machine import BareBoard
from tests.unit.interp.guest import (
    GDT,
    HAVE_NASM,
    IDT,
    PD,
    TSS,
    TSS_SEL,
    assemble,
    long_mode_state,
    machine,
    set_gate,
)

pytestmark = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed")

CODE = 0x200000
DATA = 0x300000
RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)


def run64(source: str, user: bool = False, intercept: set[int] | None = None,
          setup=None, engine_class: type = InterpreterEngine,  # noqa: ANN001
          ) -> tuple[StopKind, CpuState, BareBoard, InterpreterEngine]:
    board = BareBoard(16 << 20)
    engine = engine_class(board)
    if engine_class is JitEngine:
        engine.hot_after = 1  # translate code that runs once (the JIT is under test)
    board.memory.write(CODE, assemble(source + "\nhlt", CODE))
    state = long_mode_state(board, CODE, user=user)
    if setup is not None:
        setup(board, state)
    engine.set_state(state)
    engine.intercept_exceptions = set(intercept or ())
    stop = engine.run(timeout=5)
    return stop, engine.get_state(), board, engine


# -- segment-base MSRs and SWAPGS (SDM Vol. 2B "SWAPGS", Vol. 4 Table 2-2 C000_010xH) ----

def test_fs_gs_base_msrs_and_swapgs() -> None:
    stop, s, board, _ = run64("""
mov ecx, 0xC0000100
mov eax, 0x300000
xor edx, edx
wrmsr
mov ecx, 0xC0000101
mov eax, 0x301000
wrmsr
mov ecx, 0xC0000102
mov eax, 0x302000
wrmsr
mov r8, [fs:0]
mov r9, [gs:0]
swapgs
mov r10, [gs:0]
mov ecx, 0xC0000101
rdmsr
mov r11d, eax
mov ecx, 0xC0000102
rdmsr
mov r12d, eax
swapgs
mov r13, [gs:8]
""", setup=lambda b, st: [b.memory.write_u64(DATA + i * 0x1000, 0x1111 * (i + 1))
                          for i in range(3)] and None)
    g = s.gprs
    assert stop.kind is StopKind.HALTED, stop.describe()
    assert (g[8], g[9], g[10]) == (0x1111, 0x2222, 0x3333)
    assert g[11] == 0x302000  # GS.base after SWAPGS = the old KERNEL_GS_BASE
    assert g[12] == 0x301000  # and KERNEL_GS_BASE holds the old GS.base
    assert g[13] == 0  # swapped back: [0x301008] is still zero


def test_swapgs_outside_64bit_mode_is_ud_and_at_cpl3_is_gp() -> None:
    stop, s, _, _ = run64("swapgs", user=True, intercept={6, 13})
    assert (stop.kind, stop.vector, stop.error_code, s.rip) == (StopKind.EXCEPTION, 13, 0, CODE)


# -- MOV SS interrupt shadow (SDM Vol. 3A §6.8.3) ------------------------------------------

class _PendingAfterSs:
    """Raises INTR once SS holds 0x55: only after the MOV SS shadow may it be taken."""

    def __init__(self, engine: InterpreterEngine) -> None:
        self.engine = engine
        self.done = False

    def interrupt_pending(self) -> bool:
        return not self.done and self.engine.cpu.seg_sel[2] == 0x55

    def acknowledge(self) -> int:
        self.done = True
        return 0x20


@pytest.mark.parametrize("load", ["mov ss, ax", "push ax\npop ss"])
def test_mov_ss_shadow_delays_interrupt_by_one_instruction(load: str) -> None:
    board, engine = machine()
    board.interrupt_controller = _PendingAfterSs(engine)
    board.memory.write(0x1000, assemble(f"mov ax, 0x55\n{load}\nmov dx, 1\nmov dx, 2\ncli\nhlt",
                                        0x1000, 16))
    board.memory.write(0x2000, assemble("mov cx, dx\ncli\nhlt", 0x2000, 16))
    board.memory.write_u16(0x20 * 4, 0x2000)
    board.memory.write_u16(0x20 * 4 + 2, 0)
    state = CpuState()
    state.rip = 0x1000
    state.gprs[RSP] = 0x8000
    state.rflags = 0x202
    engine.set_state(state)
    assert engine.run(timeout=5).kind is StopKind.HALTED
    assert engine.get_state().gprs[RCX] & 0xFFFF == 1  # exactly one MOV DX ran first


# -- real mode with 386 prefixes on the x86-64 model (SDM Vol. 3A §20.1) -----------------

def test_real_mode_operand_and_address_size_prefixes() -> None:
    board, engine = machine()
    board.memory.write(0x1000, assemble("""
mov eax, 0x12345678
mov esi, 0x100
mov ebx, [esi*2+0x200]
shl eax, 4
mov ecx, eax
movzx edi, word [esi*2+0x202]
a32 lea edx, [eax+esi*8+0x10000]
cli
hlt""", 0x1000, 16))
    board.memory.write_u32(0x400, 0xCAFEBABE)
    state = CpuState()
    state.rip = 0x1000
    state.gprs[RSP] = 0x8000
    engine.set_state(state)
    assert engine.run(timeout=5).kind is StopKind.HALTED
    g = engine.get_state().gprs
    assert g[RBX] == 0xCAFEBABE
    assert g[RCX] == (0x12345678 << 4) & 0xFFFFFFFF
    assert g[RDI] == 0xCAFE
    assert g[RDX] == ((0x12345678 << 4) + 0x800 + 0x10000) & 0xFFFFFFFF


@pytest.mark.parametrize("engine_class", [InterpreterEngine, JitEngine])
def test_lgdt_lidt_base_width_follows_the_operand_size(engine_class: type) -> None:
    """SDM Vol. 2A "LGDT/LIDT": with a 16-bit operand size only the low 24 bits of
    the 4-byte base load; with a 32-bit one (66h in real mode) all 32.  SGDT/SIDT
    store the full 32-bit base (SDM Vol. 2B "SGDT")."""
    board = BareBoard(4 << 20)
    engine = engine_class(board)
    if engine_class is JitEngine:
        engine.hot_after = 1
    board.memory.write(0x1000, assemble("""
lgdt [0x500]
sgdt [0x600]
o32 lgdt [0x500]
sgdt [0x610]
lidt [0x508]
sidt [0x620]
o32 lidt [0x508]
sidt [0x630]
cli
hlt""", 0x1000, 16))
    board.memory.write(0x500, bytes.fromhex("ff0f" "2002ffff" "ffff" "ff03" "78563412"))
    state = CpuState()
    state.rip = 0x1000
    state.gprs[RSP] = 0x8000
    engine.set_state(state)
    assert engine.run(timeout=5).kind is StopKind.HALTED
    read = board.memory.read_u32
    assert board.memory.read_u16(0x600) == 0x0FFF and read(0x602) == 0x00FF0220
    assert board.memory.read_u16(0x610) == 0x0FFF and read(0x612) == 0xFFFF0220
    assert board.memory.read_u16(0x620) == 0x03FF and read(0x622) == 0x00345678
    assert board.memory.read_u16(0x630) == 0x03FF and read(0x632) == 0x12345678


# -- descriptor-table and control/debug registers (SDM Vol. 2B) ----------------------------

def test_smsw_lmsw_clts_sgdt_sidt_str_mov_dr() -> None:
    stop, s, board, _ = run64("""
smsw r14
sgdt [0x303000]
sidt [0x303010]
str r15w
mov rax, 0x1234
mov dr0, rax
mov rbx, dr0
mov rax, dr7
mov r8, rax
mov rax, cr0
or eax, 8
mov cr0, rax
smsw r9
clts
mov rsi, cr0
mov ax, 0x000F
lmsw ax
mov rdi, cr0
mov ax, 0x0000
lmsw ax
mov r10, cr0
""")
    g = s.gprs
    assert stop.kind is StopKind.HALTED, stop.describe()
    assert g[14] & 0xFFFF == 0x0011  # PE and ET; SMSW r64 stores all of CR0
    assert board.memory.read_u16(0x303000) == 0x37 and board.memory.read_u64(0x303002) == GDT
    assert board.memory.read_u16(0x303010) == 0xFFF and board.memory.read_u64(0x303012) == IDT
    assert g[15] & 0xFFFF == TSS_SEL
    assert g[RBX] == 0x1234
    assert g[8] == 0x400  # DR7 reset value
    assert g[9] & CR0_TS
    assert not g[RSI] & CR0_TS  # CLTS cleared TS
    assert g[RDI] & 0xF == 0xF  # LMSW sets MP EM TS (PE already 1)
    assert g[10] & 0xF == 0x1  # LMSW clears MP/EM/TS but can never clear PE


# -- RDTSC and CPUID ------------------------------------------------------------------------

@pytest.mark.parametrize("engine_class", [InterpreterEngine, JitEngine])
def test_rdtsc_counts_instructions_inside_a_batch(engine_class: type) -> None:
    """At 1 ns per instruction, the TSC difference is the instruction distance (3)."""
    stop, s, _, engine = run64(engine_class=engine_class, source="""
rdtsc
mov r12d, eax
nop
rdtsc
sub eax, r12d
mov r13d, eax
rdtsc
mov r14d, eax
mov ecx, 0x10
rdmsr
sub eax, r14d
mov r15d, eax
""")
    assert engine.ns_per_instruction == 1
    g = s.gprs
    assert g[13] == 3  # rdtsc; mov; nop; rdtsc
    assert g[15] == 3  # rdtsc; mov; mov; rdmsr(IA32_TSC)


def test_rdtsc_matches_the_clock_at_that_instruction() -> None:
    stop, s, board, _ = run64("nop\nnop\nnop\nnop\nrdtsc\nshl rdx, 32\nor rax, rdx")
    assert s.gprs[RAX] == 4  # four instructions ran before it, guest time starts at 0
    assert board.clock.now_ns() == 8  # every instruction up to and including HLT


def test_cpuid_hypervisor_leaf() -> None:
    """CPUID.1:ECX[31] says "hypervisor"; 0x40000000 gives the shared pyvmm leaves."""
    from pyvmm.cpu.cpuid import hypervisor_leaves
    stop, s, _, _ = run64("mov eax, 1\ncpuid\nmov r8d, ecx\nmov eax, 0x40000000\ncpuid")
    g = s.gprs
    assert g[8] >> 31 & 1
    assert (g[RAX], g[RBX], g[RCX], g[RDX]) == hypervisor_leaves()[(0x40000000, 0)]
    assert g[RAX] >= 0x40000000  # the highest hypervisor leaf


# -- fixed MSRs an early kernel reads (SDM Vol. 4 Table 2-2) --------------------------------

@pytest.mark.parametrize("index,value", [(0x8B, 0), (0x1A0, 1), (0x3A, 1), (0x17, 0),
                                         (0xFE, 0), (0x179, 0)])
def test_fixed_msrs_read(index: int, value: int) -> None:
    stop, s, _, _ = run64(f"mov ecx, {index:#x}\nmov eax, 0xdead\nmov edx, 0xbeef\nrdmsr",
                          intercept={13})
    assert stop.kind is StopKind.HALTED, stop.describe()
    assert ((s.gprs[RDX] << 32) | s.gprs[RAX]) == value


@pytest.mark.parametrize("index,faults", [(0x8B, False), (0x1A0, False), (0x3A, True),
                                          (0x17, True), (0xFE, True), (0x179, True)])
def test_fixed_msrs_write(index: int, faults: bool) -> None:
    """Read-only and locked MSRs #GP(0) on WRMSR; BIOS_SIGN_ID/MISC_ENABLE ignore it."""
    stop, s, _, _ = run64(f"mov ecx, {index:#x}\nxor eax, eax\nxor edx, edx\nwrmsr\nrdmsr",
                          intercept={13})
    if faults:
        assert (stop.kind, stop.vector, stop.error_code) == (StopKind.EXCEPTION, 13, 0)
        assert s.rip == CODE + 9  # at the WRMSR (after mov ecx, imm32; xor; xor)
    else:
        assert stop.kind is StopKind.HALTED, stop.describe()


def test_unknown_msr_is_gp() -> None:
    stop, s, _, _ = run64("mov ecx, 0x12345\nrdmsr", intercept={13})
    assert (stop.kind, stop.vector, stop.error_code) == (StopKind.EXCEPTION, 13, 0)


# -- compatibility mode and far transfers (SDM Vol. 3A §5.8, Vol. 2B "RET") ---------------

def test_compatibility_mode_far_return_to_64bit_and_back() -> None:
    def setup(board: BareBoard, state: CpuState) -> None:
        board.memory.write_u64(GDT + 0x38, 0x00CF9B000000FFFF)  # 32-bit ring-0 code, DPL 0
        state.gdtr.limit = 0x3F
        state.segments["cs"] = SegmentState(selector=0x38, base=0, limit=0xFFFFFFFF, type=0xB,
                                            s=1, dpl=0, present=1, db=1, g=1, l=0)
        board.memory.write(0x201000, assemble("""
mov rax, 0x123456789
lea rdx, [rel here]
here: mov r9, 7
push 0x38
push 0x202000
retfq""", 0x201000, 64))
        board.memory.write(0x202000, assemble("mov esi, 0x42\nhlt", 0x202000, 32))

    board, engine = machine()
    board.memory.write(CODE, assemble("""
mov eax, 5
push eax
pop ebx
mov ecx, esp
push dword 0x08
push dword 0x201000
retf""", CODE, 32))
    state = long_mode_state(board, CODE)
    setup(board, state)
    engine.set_state(state)
    stop = engine.run(timeout=5)
    s = engine.get_state()
    g = s.gprs
    assert stop.kind is StopKind.HALTED, stop.describe()
    assert g[RBX] == 5 and g[RCX] == 0x7F000  # 32-bit pushes in compatibility mode
    assert g[RAX] == 0x123456789  # 64-bit code ran after the far return
    assert g[RDX] == 0x201000 + 10 + 7  # RIP-relative LEA: address of `here`
    assert g[9] == 7 and g[RSI] == 0x42
    assert s.segments["cs"].selector == 0x38 and s.rip == 0x202006


# -- 32-bit IDT: ring 3 -> ring 0 through an interrupt gate, IRETD back (SDM Vol. 3A §6.12) -

def _desc(base: int, limit: int, access: int, flags: int) -> int:
    return (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (access << 40) \
        | (((limit >> 16) & 0xF) << 48) | (flags << 52) | (((base >> 24) & 0xFF) << 56)


def test_32bit_interrupt_gate_ring3_to_ring0_and_iretd_back() -> None:
    board, engine = machine()
    m = board.memory
    gdt = [0, _desc(0, 0xFFFFF, 0x9A, 0xC), _desc(0, 0xFFFFF, 0x92, 0xC),
           _desc(0, 0xFFFFF, 0xFA, 0xC), _desc(0, 0xFFFFF, 0xF2, 0xC),
           _desc(TSS, 0x67, 0x89, 0)]
    for i, d in enumerate(gdt):
        m.write_u64(GDT + 8 * i, d)
    m.write_u32(TSS + 4, 0x90000)  # ESP0
    m.write_u32(TSS + 8, 0x10)  # SS0
    handler = 0x3000
    m.write_u64(IDT + 8 * 0x80, (handler & 0xFFFF) | (0x08 << 16) | (0xEE << 40)
                | ((handler >> 16) << 48))  # 32-bit interrupt gate, DPL 3
    m.write(0x1000, assemble(f"""
lgdt [gdtp]
lidt [idtp]
mov ax, 0x28
ltr ax
push dword 0x23
push dword 0x70000
push dword 0x202
push dword 0x1B
push dword 0x2000
iretd
gdtp: dw 6*8-1
      dd {GDT:#x}
idtp: dw 256*8-1
      dd {IDT:#x}
""", 0x1000, 32))
    m.write(0x2000, assemble("mov eax, 0x11\nint 0x80\nmov ebx, eax\nmov edx, cs\nmov ecx, esp\n"
                             "pushfd\npop edi\nud2", 0x2000, 32))
    m.write(handler, assemble("mov esi, [esp+12]\nmov edi, ss\nmov ebp, esp\nadd eax, 1\n"
                              "pushfd\npop dword [ss:0x5000]\niretd", handler, 32))
    state = CpuState()
    state.cr0 = 0x11
    state.rip = 0x1000
    state.segments["cs"] = SegmentState.flat32(0x08, code=True)
    for name in ("ds", "es", "ss", "fs", "gs"):
        state.segments[name] = SegmentState.flat32(0x10, code=False)
    state.gprs[RSP] = 0x80000
    engine.set_state(state)
    engine.intercept_exceptions = {6, 13}
    stop = engine.run(timeout=5)
    g = engine.get_state().gprs
    assert (stop.kind, stop.vector) == (StopKind.EXCEPTION, 6), stop.describe()
    assert engine.get_state().rip == 0x2000 + 5 + 2 + 2 + 2 + 2 + 1 + 1  # at the UD2
    assert g[RSI] == 0x70000  # the user ESP in the ring-0 frame (EIP CS EFLAGS ESP SS)
    assert g[RBP] == 0x90000 - 20  # five dwords on the TSS's ring-0 stack
    assert m.read_u32(0x5000) & 0x200 == 0  # an interrupt gate clears IF
    assert g[RBX] == 0x12 and g[RDX] & 0xFFFF == 0x1B and g[RCX] == 0x70000
    assert g[RDI] & 0x200  # IRETD restored IF


# -- TLB invalidation reaches the CPU's fast page dicts (SDM Vol. 3A §4.10.4) -------------

A_PHYS, B_PHYS = 0x600000, 0x400000  # two 2 MiB frames; PD[3] maps 0x600000 to one of them


def _remap_source(flush: str) -> str:
    return f"""
mov rax, [0x600000]
mov r8, rax
mov qword [0x600008], 0x77
mov qword [{PD + 3 * 8:#x}], {B_PHYS | 0x87:#x}
{flush}
mov rax, [0x600000]
mov r9, rax
mov qword [0x600010], 0x99
"""


@pytest.mark.parametrize("flush", ["invlpg [0x600000]", "mov rax, cr3\nmov cr3, rax"])
def test_tlb_flush_drops_stale_fast_path_mappings(flush: str) -> None:
    def setup(board: BareBoard, state: CpuState) -> None:
        board.memory.write_u64(A_PHYS, 0xAAAA)
        board.memory.write_u64(B_PHYS, 0xBBBB)

    stop, s, board, _ = run64(_remap_source(flush), setup=setup)
    assert stop.kind is StopKind.HALTED, stop.describe()
    assert s.gprs[8] == 0xAAAA
    assert s.gprs[9] == 0xBBBB  # the read after the flush sees the new frame
    assert board.memory.read_u64(A_PHYS + 8) == 0x77
    assert board.memory.read_u64(B_PHYS + 0x10) == 0x99  # so does the write
    assert board.memory.read_u64(A_PHYS + 0x10) == 0


def test_cpu_invlpg_clears_fast_dicts() -> None:
    """Cpu-level: after the PTE changes, Cpu.invlpg must make read()/write() re-translate."""
    board, engine = machine(16 << 20)
    state = long_mode_state(board, CODE)
    board.memory.write_u64(A_PHYS, 0xAAAA)
    board.memory.write_u64(B_PHYS, 0xBBBB)
    engine.set_state(state)
    cpu = engine.cpu
    assert cpu.read(3, 0x600000, 8) == 0xAAAA  # DS-relative, fills the fast dicts
    cpu.write(3, 0x600020, 8, 1)
    board.memory.write_u64(PD + 3 * 8, B_PHYS | 0x87)
    cpu.invlpg(0x600000)
    assert cpu.read(3, 0x600000, 8) == 0xBBBB
    cpu.write(3, 0x600020, 8, 2)
    assert board.memory.read_u64(B_PHYS + 0x20) == 2
    assert board.memory.read_u64(A_PHYS + 0x20) == 1


# -- CMPXCHG8B (SDM Vol. 2A "CMPXCHG8B/CMPXCHG16B") -----------------------------------------

def test_cmpxchg8b_equal_and_not_equal() -> None:
    stop, s, board, _ = run64("""
mov eax, 0x11111111
mov edx, 0x22222222
mov ebx, 0x33333333
mov ecx, 0x44444444
cmpxchg8b [0x300000]
setz r8b
mov r9, [0x300000]
xor eax, eax
xor edx, edx
cmpxchg8b [0x300000]
setz r10b
mov r11d, eax
mov r12d, edx
mov r13, [0x300000]
""", setup=lambda b, st: b.memory.write_u64(0x300000, 0x2222222211111111))
    g = s.gprs
    assert stop.kind is StopKind.HALTED, stop.describe()
    assert g[8] & 0xFF == 1 and g[9] == 0x4444444433333333  # equal: ECX:EBX stored
    assert g[10] & 0xFF == 0  # not equal: ZF=0, EDX:EAX loaded, memory unchanged
    assert (g[11], g[12], g[13]) == (0x33333333, 0x44444444, 0x4444444433333333)


def test_cmpxchg8b_register_operand_is_ud() -> None:
    stop, s, _, _ = run64("db 0x0f, 0xc7, 0xc8", intercept={6})  # cmpxchg8b with mod=11
    assert (stop.kind, stop.vector, s.rip) == (StopKind.EXCEPTION, 6, CODE)


# -- unsupported instructions are counted per execution (CONTRACT.md) ----------------------

def test_unsupported_instruction_counted_every_time_it_runs() -> None:
    def setup(board: BareBoard, state: CpuState) -> None:
        board.memory.write(0x210000, assemble("add qword [rsp], 3\niretq", 0x210000))
        set_gate(board, 6, 0x210000)

    stop, s, board, _ = run64("mov ecx, 5\nl: pshufb xmm0, xmm1\nloop l", setup=setup)
    assert stop.kind is StopKind.HALTED, stop.describe()
    assert board.stats.get("unsupported", "pshufb") == 5
    assert board.stats.get("exceptions", "#UD") == 5
