"""Which status flags a block leaves architecturally undefined.

iced-x86 reports per instruction which RFLAGS bits it reads, writes and
leaves undefined (its own `RflagsBits` numbering, translated here to EFLAGS
bit positions, SDM Vol. 1 §3.4.3).  A flag is "maybe undefined" at a point if
on some path to it an instruction left it undefined and nothing redefined it
since; those flags are masked when comparing.  Blocks only branch forward,
so one pass in address order over the control-flow DAG is exact.
"""

from __future__ import annotations

from iced_x86 import Code, FlowControl, Instruction, Mnemonic, OpKind, RflagsBits

from pyvmm.cpu.state import FLAG_AF, FLAG_CF, FLAG_DF, FLAG_OF, FLAG_PF, FLAG_SF, FLAG_ZF
from pyvmm.oracle.vendor import host_is_modelled_vendor

# iced RflagsBits -> EFLAGS bit.
_ICED_TO_EFLAGS = (
    (RflagsBits.OF, FLAG_OF), (RflagsBits.SF, FLAG_SF), (RflagsBits.ZF, FLAG_ZF),
    (RflagsBits.AF, FLAG_AF), (RflagsBits.CF, FLAG_CF), (RflagsBits.PF, FLAG_PF),
    (RflagsBits.DF, FLAG_DF),
)

STATUS_FLAGS = FLAG_CF | FLAG_PF | FLAG_AF | FLAG_ZF | FLAG_SF | FLAG_OF
COMPARED_FLAGS = STATUS_FLAGS | FLAG_DF

# Shifts and rotates: a masked count of 0 leaves every flag alone (SDM Vol. 2B
# "SAL/SAR/SHL/SHR", "RCL/RCR/ROL/ROR": "If the count is 0, the flags are not affected").
_SHIFTS = frozenset({Mnemonic.SHL, Mnemonic.SAL, Mnemonic.SHR, Mnemonic.SAR, Mnemonic.ROL,
                     Mnemonic.ROR, Mnemonic.RCL, Mnemonic.RCR})
# SHL/SHR/SAR of an 8/16-bit operand by a count >= its width: CF is undefined
# (SDM Vol. 2B "SAL/SAR/SHL/SHR", Flags Affected).
# SHLD/SHRD: a masked count of 0 leaves the flags alone too (SDM Vol. 2B "SHLD").
_DOUBLE_SHIFTS = frozenset({Mnemonic.SHLD, Mnemonic.SHRD})
_CF_WIDTH_SHIFTS = frozenset({Mnemonic.SHL, Mnemonic.SAL, Mnemonic.SHR, Mnemonic.SAR})
# ROL/ROR/RCL/RCR: OF is defined only for a count of 1 (SDM Vol. 2B "RCL/RCR/ROL/ROR").
# A count that rotates by 0 (RCL/RCR by 9/17, ROL/ROR of 8/16 bits by 8/16) leaves it
# on Intel CPUs, which pyvmm models; other vendors' OF is not compared there.
_ROTATES = frozenset({Mnemonic.ROL, Mnemonic.ROR, Mnemonic.RCL, Mnemonic.RCR})


def to_eflags(iced_bits: int) -> int:
    out = 0
    for iced, eflags in _ICED_TO_EFLAGS:
        if iced_bits & iced:
            out |= eflags
    return out


def _operand_bits(instr: Instruction) -> int:
    from iced_x86 import MemorySizeExt, RegisterExt
    if instr.op0_kind == OpKind.REGISTER:
        return RegisterExt.size(instr.op0_register) * 8
    return MemorySizeExt.size(instr.memory_size) * 8


def shift_count(instr: Instruction) -> int | None:
    """The masked immediate count of a shift/rotate/SHLD/SHRD, None when it comes from CL."""
    last = instr.op_count - 1
    if instr.op_kind(last) == OpKind.REGISTER:
        return None
    mask = 0x3F if _operand_bits(instr) == 64 else 0x1F
    return instr.immediate(last) & mask


def effect(instr: Instruction) -> tuple[int, int, int]:
    """(read, defined, undefined) EFLAGS bits of one instruction, conservatively.

    `defined` flags get a value every implementation must agree on;
    `undefined` ones may differ; flags in neither are left unchanged.
    """
    read = to_eflags(instr.rflags_read)
    undefined = to_eflags(instr.rflags_undefined)
    defined = to_eflags(instr.rflags_modified) & ~undefined
    if instr.mnemonic in _SHIFTS and instr.op_count == 2 or instr.mnemonic in _DOUBLE_SHIFTS:
        count = shift_count(instr)
        if count == 0:
            return read, 0, 0
        if count is None:
            # A zero count would leave flags alone: none is known to be redefined.
            defined = 0
        if instr.mnemonic in _ROTATES and count != 1 and not host_is_modelled_vendor():
            undefined |= FLAG_OF
            defined &= ~FLAG_OF
        if instr.mnemonic in _CF_WIDTH_SHIFTS and _operand_bits(instr) < 32:
            if count is None or count >= _operand_bits(instr):
                undefined |= FLAG_CF
                defined &= ~FLAG_CF
    if defined and (instr.has_rep_prefix or instr.has_repne_prefix) and instr.is_string_instruction:
        # REPE/REPNE CMPS/SCAS with a count of 0 run no iteration and leave
        # the flags alone: the generator does not know the count here.
        defined = 0
    return read, defined, undefined


def transfer(instr: Instruction, maybe_undefined: int) -> int:
    """Maybe-undefined flags after `instr`, given those before it."""
    _read, defined, undefined = effect(instr)
    return (maybe_undefined & ~defined) | undefined


def falls_through(instr: Instruction) -> bool:
    return instr.flow_control not in (FlowControl.UNCONDITIONAL_BRANCH, FlowControl.RETURN,
                                      FlowControl.INTERRUPT) and instr.code != Code.HLT


def branch_target(instr: Instruction) -> int | None:
    if instr.flow_control in (FlowControl.CONDITIONAL_BRANCH, FlowControl.UNCONDITIONAL_BRANCH):
        if instr.op0_kind in (OpKind.NEAR_BRANCH16, OpKind.NEAR_BRANCH32, OpKind.NEAR_BRANCH64):
            return instr.near_branch_target
    return None


def call_target(instr: Instruction) -> int | None:
    """Target of a direct near CALL, else None."""
    if instr.flow_control == FlowControl.CALL and instr.op0_kind in (
            OpKind.NEAR_BRANCH16, OpKind.NEAR_BRANCH32, OpKind.NEAR_BRANCH64):
        return instr.near_branch_target
    return None


def _after_subroutine(instrs: list[Instruction], target: int, state: int) -> int:
    """Flags after a CALL returns: walk its straight-line subroutine up to the RET."""
    started = False
    for instr in instrs:
        started = started or instr.ip == target
        if not started:
            continue
        if instr.flow_control == FlowControl.RETURN:
            return state
        if branch_target(instr) is not None or call_target(instr) is not None:
            break
        state = transfer(instr, state)
    return STATUS_FLAGS  # not a straight-line subroutine in the block: assume the worst


def analyse(instrs: list[Instruction], end_ip: int) -> tuple[dict[int, int], int]:
    """Maybe-undefined flags before each instruction (by IP) and at `end_ip`.

    `instrs` are decoded, in address order; branches go forward only.  A near
    CALL goes forward to a straight-line subroutine ending in RET (the
    generator's call groups); it falls through with the flags the subroutine
    leaves.
    """
    incoming: dict[int, int] = {}
    before: dict[int, int] = {}
    state: int | None = 0  # None: not reachable by falling through
    for instr in instrs:
        joined = incoming.get(instr.ip)
        if state is None:
            state = joined if joined is not None else 0
        elif joined is not None:
            state |= joined
        before[instr.ip] = state
        after = transfer(instr, state)
        target = branch_target(instr)
        if target is not None:
            incoming[target] = incoming.get(target, 0) | after
        called = call_target(instr)
        if called is not None:
            incoming[called] = incoming.get(called, 0) | after
            after = _after_subroutine(instrs, called, after)
        state = after if falls_through(instr) else None
    end = incoming.get(end_ip)
    if state is None:
        state = end if end is not None else 0
    elif end is not None:
        state |= end
    return before, state
