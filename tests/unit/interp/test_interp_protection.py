"""Interpreter core: canonical checks, call gates, LAR/LSL/VERR/VERW, SYSENTER/SYSEXIT,
TF single-step, task switches (a clean stop), the hypercall register hook."""

from __future__ import annotations

import pytest

from pyvmm.cpu.state import (
    CR0_PE,
    MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_EIP,
    MSR_IA32_SYSENTER_ESP,
    CpuState,
    SegmentState,
)
from pyvmm.engines.interp.segmentation import encode_descriptor
from pyvmm.machine.stop import StopKind
from tests.unit.interp import guest
from tests.unit.interp.guest import (
    GDT,
    HAVE_NASM,
    KCODE,
    KDATA,
    KERNEL_STACK,
    TSS_SEL,
    UCODE,
    UDATA,
    USER_STACK,
    assemble,
    long_mode_state,
    machine,
    set_gate,
)

pytestmark = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed")

CODE = 0x200000
HANDLER = 0x201000
GP, SS, DB = 13, 12, 1
ZF = 0x40
NONCANON = 0x0000800000000000


def _load(board, address: int, source: str, bits: int = 64) -> None:  # noqa: ANN001
    board.memory.write(address, assemble(source, address, bits))


def _stop_at(engine, vector: int):  # noqa: ANN001, ANN202
    engine.intercept_exceptions = {vector}
    stop = engine.run(timeout=5)
    assert stop.kind is StopKind.EXCEPTION and stop.vector == vector, stop.describe()
    return stop, engine.get_state()


# -- canonical addresses (SDM Vol. 1 §3.3.7.1) ----------------------------------

def test_noncanonical_data_reference_is_gp0() -> None:
    board, engine = machine()
    _load(board, CODE, "mov rax, [rbx]")
    state = long_mode_state(board, CODE)
    state.gprs[3] = NONCANON
    engine.set_state(state)
    stop, out = _stop_at(engine, GP)
    assert stop.error_code == 0 and out.rip == CODE


def test_noncanonical_stack_reference_is_ss0() -> None:
    board, engine = machine()
    _load(board, CODE, "mov rax, [rbp + 8]")  # RBP-based: an SS reference
    state = long_mode_state(board, CODE)
    state.gprs[5] = NONCANON - 8
    engine.set_state(state)
    stop, out = _stop_at(engine, SS)
    assert stop.error_code == 0 and out.rip == CODE


def test_access_running_into_noncanonical_range_faults() -> None:
    board, engine = machine()
    _load(board, CODE, "mov rax, [rbx]")
    state = long_mode_state(board, CODE)
    state.gprs[3] = NONCANON - 4  # bytes 4..7 are non-canonical
    engine.set_state(state)
    _stop_at(engine, GP)


def test_jump_and_return_to_noncanonical_fault_on_the_branch() -> None:
    board, engine = machine()
    _load(board, CODE, "jmp rax")
    state = long_mode_state(board, CODE)
    state.gprs[0] = NONCANON
    engine.set_state(state)
    _, out = _stop_at(engine, GP)
    assert out.rip == CODE  # the JMP faulted, not the fetch at the target

    board, engine = machine()
    _load(board, CODE, "push rax\nret")
    state = long_mode_state(board, CODE)
    state.gprs[0] = NONCANON
    engine.set_state(state)
    _, out = _stop_at(engine, GP)
    assert out.rip == CODE + 1 and out.gprs[4] == KERNEL_STACK - 0x1000 - 8  # RSP unchanged


def test_canonical_high_half_is_accessible() -> None:
    board, engine = machine()
    _load(board, CODE, "mov rax, [rbx]\nhlt")
    state = long_mode_state(board, CODE)
    state.gprs[3] = 0xFFFF800000000000  # canonical, but not mapped: #PF, not #GP
    engine.set_state(state)
    stop, _ = _stop_at(engine, 14)
    assert stop.vector == 14


# -- call gates (SDM Vol. 3A §5.8.3-5.8.6) ----------------------------------------

GATE_SEL = 0x38


def _gate64(board, selector: int, target_cs: int, offset: int, dpl: int) -> None:  # noqa: ANN001
    lo = (offset & 0xFFFF) | (target_cs << 16) | (0xC << 40) | (dpl << 45) | (1 << 47) \
        | (((offset >> 16) & 0xFFFF) << 48)
    board.memory.write_u64(GDT + selector, lo)
    board.memory.write_u64(GDT + selector + 8, offset >> 32)


def test_64bit_call_gate_to_ring0_and_far_return() -> None:
    board, engine = machine()
    _load(board, CODE, f"""
        call far [rel farptr]
        mov rdx, cs
        mov rsi, rsp
        hlt                     ; CPL 3: #GP, the end of the test
    farptr: dq 0
        dw {GATE_SEL | 3}
    """)
    _load(board, HANDLER, "mov rax, cs\nmov rcx, rsp\nmov rbx, [rsp + 8]\no64 retf")
    _gate64(board, GATE_SEL, KCODE, HANDLER, dpl=3)
    state = long_mode_state(board, CODE, user=True)
    state.gdtr.limit = 0x47
    engine.set_state(state)
    _, out = _stop_at(engine, GP)
    assert out.gprs[0] == KCODE  # ring 0 in the gate's code segment
    assert out.gprs[1] == KERNEL_STACK - 32  # TSS.RSP0, then SS, RSP, CS, RIP (8 bytes each)
    assert out.gprs[3] == UCODE  # the caller's CS on the inner stack
    assert out.gprs[2] == UCODE and out.gprs[6] == USER_STACK  # back in ring 3


def test_call_gate_with_dpl_below_cpl_is_gp() -> None:
    board, engine = machine()
    _load(board, CODE, f"call far [rel farptr]\nfarptr: dq 0\ndw {GATE_SEL | 3}")
    _gate64(board, GATE_SEL, KCODE, HANDLER, dpl=0)
    state = long_mode_state(board, CODE, user=True)
    state.gdtr.limit = 0x47
    engine.set_state(state)
    stop, out = _stop_at(engine, GP)
    assert stop.error_code == GATE_SEL and out.rip == CODE


# 32-bit protected mode without paging: null, code0, data0, code3, data3, TSS32, gate.
P_CODE0, P_DATA0, P_CODE3, P_DATA3, P_TSS, P_GATE = 0x08, 0x10, 0x1B, 0x23, 0x28, 0x30
P_TSS_BASE, P_STACK0, P_STACK3 = 0x15000, 0x80000, 0x70000


def _protected32(board, rip: int, gate_target: int, params: int) -> CpuState:  # noqa: ANN001
    mem = board.memory
    descs = [0,
             encode_descriptor(0, 0xFFFFF, 0xB, 1, 0, 1, db=1, g=1),
             encode_descriptor(0, 0xFFFFF, 0x3, 1, 0, 1, db=1, g=1),
             encode_descriptor(0, 0xFFFFF, 0xB, 1, 3, 1, db=1, g=1),
             encode_descriptor(0, 0xFFFFF, 0x3, 1, 3, 1, db=1, g=1),
             encode_descriptor(P_TSS_BASE, 0x67, 0xB, 0, 0, 1),
             (gate_target & 0xFFFF) | (P_CODE0 << 16) | (params << 32) | (0xC << 40)
             | (3 << 45) | (1 << 47) | ((gate_target >> 16) << 48)]
    for i, d in enumerate(descs):
        mem.write_u64(GDT + 8 * i, d)
    mem.write_u32(P_TSS_BASE + 4, P_STACK0)  # ESP0
    mem.write_u32(P_TSS_BASE + 8, P_DATA0)  # SS0
    state = CpuState()
    state.cr0 = CR0_PE | 0x10
    state.gdtr.base, state.gdtr.limit = GDT, 8 * len(descs) - 1
    state.tr = SegmentState(selector=P_TSS, base=P_TSS_BASE, limit=0x67, type=0xB, s=0)
    state.segments["cs"] = SegmentState.flat32(P_CODE3, code=True, dpl=3)
    for name in ("ds", "es", "ss", "fs", "gs"):
        state.segments[name] = SegmentState.flat32(P_DATA3, code=False, dpl=3)

    state.rip = rip
    state.gprs[4] = P_STACK3
    return state


def test_32bit_call_gate_copies_parameters_to_the_inner_stack() -> None:
    board, engine = machine()
    _load(board, CODE, f"""
        push dword 0x11111111
        push dword 0x22222222
        call {P_GATE | 3}:0
        mov edi, cs
        mov esi, esp
        hlt
    """, bits=32)
    _load(board, HANDLER, """
        mov eax, [esp + 8]      ; parameter 0 (the last pushed)
        mov ebx, [esp + 12]     ; parameter 1
        mov ecx, [esp + 16]     ; caller's ESP
        mov edx, cs
        mov ebp, esp
        retf 8
    """, bits=32)
    engine.set_state(_protected32(board, CODE, HANDLER, params=2))
    _, out = _stop_at(engine, GP)
    regs = out.gprs
    assert regs[0] == 0x22222222 and regs[3] == 0x11111111
    assert regs[1] == P_STACK3 - 8  # the caller's ESP after its two pushes
    assert regs[2] == P_CODE0 and regs[5] == P_STACK0 - 24  # EIP CS p0 p1 ESP SS
    assert regs[7] == P_CODE3 and regs[6] == P_STACK3  # RETF 8 dropped the parameters


def test_task_switch_stops_cleanly() -> None:
    board, engine = machine()
    _load(board, CODE, f"jmp {P_TSS}:0", bits=32)
    state = _protected32(board, CODE, HANDLER, params=0)
    state.segments["cs"] = SegmentState.flat32(P_CODE0, code=True)

    # An available TSS as the target (the current one is busy): retype GDT entry 5.
    board.memory.write_u64(GDT + P_TSS, encode_descriptor(P_TSS_BASE, 0x67, 0x9, 0, 0, 1))
    engine.set_state(state)
    stop = engine.run(timeout=5)
    assert stop.kind is StopKind.INTERNAL_ERROR and "task switch" in stop.message


# -- LAR / LSL / VERR / VERW ---------------------------------------------------

def test_lar_lsl_verr_verw() -> None:
    board, engine = machine()
    _load(board, CODE, f"""
        mov eax, 0x5a5a
        mov cx, {UDATA}
        lar eax, cx
        setz r8b
        mov cx, {KDATA}
        lsl ebx, cx
        setz r9b
        mov cx, {TSS_SEL}
        lsl edx, cx
        mov esi, 0x1234
        xor ecx, ecx
        lar esi, cx             ; null selector: ZF=0, ESI unchanged
        setz r10b
        mov cx, {KCODE}
        verr cx
        setz r11b
        verw cx                 ; code is never writable
        setz r12b
        mov cx, {KDATA}
        verw cx
        setz r13b
        mov cx, 0x400           ; beyond the GDT limit: ZF=0, no fault
        verr cx
        setz r14b
        hlt
    """)
    engine.set_state(long_mode_state(board, CODE))
    stop = engine.run(timeout=5)
    assert stop.kind is StopKind.HALTED, stop.describe()
    r = engine.get_state().gprs
    assert r[0] == 0x00C0F300  # G D/B, P DPL=3 S type=3 (SDM "LAR")
    assert r[3] == 0xFFFFFFFF and r[2] == 0x67
    assert r[6] == 0x1234
    assert [r[i] & 0xFF for i in range(8, 15)] == [1, 1, 0, 1, 0, 1, 0]


def test_verr_from_ring3_on_ring0_data_fails() -> None:
    board, engine = machine()
    _load(board, CODE, f"mov cx, {KDATA}\nverr cx\nsetz al\nmov cx, {UDATA}\nverr cx\n"
                       "setz bl\nhlt")
    state = long_mode_state(board, CODE, user=True)
    state.gprs[0] = state.gprs[3] = 0x77
    engine.set_state(state)
    _, out = _stop_at(engine, GP)  # the HLT at CPL 3
    assert out.gprs[0] & 0xFF == 0 and out.gprs[3] & 0xFF == 1


# -- SYSENTER / SYSEXIT ----------------------------------------------------------

def test_sysenter_and_sysexit_64() -> None:
    board, engine = machine()
    _load(board, CODE, "sysenter\nback: mov rsi, cs\nmov rdi, ss\nhlt")
    _load(board, HANDLER, f"mov rax, cs\nmov rbx, ss\nmov r8, rsp\nmov rcx, {USER_STACK - 64}\n"
                          f"mov rdx, {CODE + 2}\no64 sysexit")
    state = long_mode_state(board, CODE, user=True)
    state.msrs = {MSR_IA32_SYSENTER_CS: KCODE, MSR_IA32_SYSENTER_ESP: KERNEL_STACK - 0x100,
                  MSR_IA32_SYSENTER_EIP: HANDLER}
    engine.set_state(state)
    _, out = _stop_at(engine, GP)  # the HLT back in ring 3
    r = out.gprs
    assert r[0] == KCODE and r[3] == KCODE + 8 and r[8] == KERNEL_STACK - 0x100
    assert r[6] == (KCODE + 32) | 3 and r[7] == (KCODE + 40) | 3
    assert r[4] == USER_STACK - 64


def test_sysenter_with_null_msr_is_gp() -> None:
    board, engine = machine()
    _load(board, CODE, "sysenter")
    engine.set_state(long_mode_state(board, CODE, user=True))
    stop, out = _stop_at(engine, GP)
    assert stop.error_code == 0 and out.rip == CODE


# -- TF single-step (SDM Vol. 3B §17.3.1.4) ------------------------------------

def test_single_step_traps_after_each_instruction_while_tf_set() -> None:
    board, engine = machine()
    _load(board, CODE, """
        pushfq
        or qword [rsp], 0x100
        popfq                   ; sets TF: no trap after this one
        nop
        nop
        pushfq
        and qword [rsp], ~0x100
        popfq                   ; clears TF, but TF was set when it began: trap
        nop
        hlt
    """)
    _load(board, HANDLER, "inc r15\nmov r14, dr6\niretq")
    set_gate(board, DB, HANDLER)
    engine.set_state(long_mode_state(board, CODE))
    stop = engine.run(timeout=5)
    assert stop.kind is StopKind.HALTED, stop.describe()
    out = engine.get_state()
    assert out.gprs[15] == 5  # nop, nop, pushfq, and, popfq
    assert out.gprs[14] & (1 << 14)  # DR6.BS


def test_single_step_trap_reports_next_instruction() -> None:
    board, engine = machine()
    _load(board, CODE, "mov eax, 1\nmov ebx, 2\nhlt")
    state = long_mode_state(board, CODE)
    state.rflags |= 0x100
    engine.set_state(state)
    stop, out = _stop_at(engine, DB)
    assert out.rip == CODE + 5 and out.gprs[0] == 1 and out.gprs[3] == 0


# -- hypercall device hook ---------------------------------------------------------

def test_cpu_access_reads_and_writes_live_registers() -> None:
    board, engine = machine()
    state = long_mode_state(board, CODE)
    state.gprs[3] = 0x1234
    engine.set_state(state)
    access = board.cpu_access
    assert access.get_registers()[3] == 0x1234
    access.set_registers({0: 0xDEAD, 7: -1})
    assert engine.cpu.regs[0] == 0xDEAD and engine.cpu.regs[7] == (1 << 64) - 1
    engine.close()
    assert board.cpu_access is None


# -- regression: CMPXCHG with a register destination ----------------------------

def test_cmpxchg_register_destination_untouched_on_mismatch() -> None:
    board, engine = machine()
    _load(board, CODE, "cmpxchg esi, r11d\nhlt")
    state = long_mode_state(board, CODE)
    state.gprs[0] = 0x1111111122222222
    state.gprs[6] = 0x90C65683F1B07721
    engine.set_state(state)
    assert engine.run(timeout=5).kind is StopKind.HALTED
    r = engine.get_state().gprs
    assert r[6] == 0x90C65683F1B07721  # silicon does not zero-extend it on failure
    assert r[0] == 0xF1B07721  # EAX = ESI, zero-extended


_ = guest
