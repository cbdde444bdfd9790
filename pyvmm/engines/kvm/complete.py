"""Completing instructions the host's KVM could not emulate.

Some hosts run a guest's ring 0 through KVM's instruction emulator instead
of hardware (nested KVM without VMX/SVM for the guest, e.g. the kvm_pvm
module here).  That emulator lacks instructions a Linux kernel executes in
ring 0; for them KVM_RUN returns KVM_EXIT_INTERNAL_ERROR with suberror
KVM_INTERNAL_ERROR_EMULATION and, when flag bit 0
(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) is set in data[0],
the instruction's length and bytes from data[1] on (KVM API,
Documentation/virt/kvm/api.rst, "KVM_EXIT_INTERNAL_ERROR"; struct
emulation_failure in include/uapi/linux/kvm.h).

pyvmm decodes those bytes with iced-x86 and completes the few instructions
in `COMPLETERS` on the vCPU's registers, as the SDM defines them:

- CLAC / STAC (SDM Vol. 2A "CLAC", Vol. 2B "STAC"): clear / set RFLAGS.AC.
  Only at CPL 0 (else #UD, which the real CPU raises natively in ring 3).
- INT3 (SDM Vol. 2A "INT n/INTO/INT3/INT1"): a trap: #BP is delivered with
  RIP after the instruction.  pyvmm advances RIP and hands the exception to
  KVM to deliver (KVM_SET_VCPU_EVENTS, exception.injected).
- FWAIT (SDM Vol. 2A "WAIT/FWAIT"): #NM when CR0.MP and CR0.TS are both
  set; else #MF when an unmasked x87 exception is pending (FSW.ES) and
  CR0.NE is set; else nothing.
- POPCNT r, r (SDM Vol. 2B "POPCNT"): the destination gets the number of
  set bits; ZF = (source == 0), CF OF SF AF PF cleared.  Register sources
  only: a memory source stays an emulation failure.

Anything else stays the INTERNAL_ERROR stop it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from iced_x86 import Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register, RegisterExt

from pyvmm.cpu.state import FLAG_AC, FLAG_AF, FLAG_CF, FLAG_OF, FLAG_PF, FLAG_SF, FLAG_ZF
from pyvmm.engines.kvm import ioctls as k

if TYPE_CHECKING:
    from pyvmm.engines.kvm.vcpu import KvmVcpu

KVM_INTERNAL_ERROR_EMULATION = 1
FLAG_INSTRUCTION_BYTES = 1 << 0
BP_VECTOR = 3

_GPR_FIELDS = {getattr(Register, name.upper()): name for name in (
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")}
_MASK64 = (1 << 64) - 1


def failed_instruction(internal: k._ExitInternal, bitness: int, rip: int) -> Instruction | None:
    """The instruction KVM reported it could not emulate, or None without its bytes."""
    if internal.suberror != KVM_INTERNAL_ERROR_EMULATION or internal.ndata < 2:
        return None
    if not internal.data[0] & FLAG_INSTRUCTION_BYTES:
        return None
    raw = b"".join(internal.data[i].to_bytes(8, "little") for i in (1, 2))
    size, code = raw[0], raw[1:16]
    if not 1 <= size <= 15:
        return None
    instruction = Decoder(bitness, code[:size], DecoderOptions.NONE, ip=rip).decode()
    # KVM hands over the bytes it fetched (up to 15), not the instruction's length.
    if instruction.code == 0 or instruction.len > size:  # Code.INVALID or cut short
        return None
    return instruction


# A completer changes `regs` (RIP already past the instruction) and returns
# DONE, a vector to deliver as an exception after the registers are written,
# or None when it cannot complete this form of the instruction.
DONE = -1
Completer = Callable[["KvmVcpu", Instruction, k.kvm_regs], int | None]
NM_VECTOR = 7
MF_VECTOR = 16
CR0_MP = 1 << 1
CR0_TS = 1 << 3
CR0_NE = 1 << 5
FSW_ES = 1 << 7


def _set_ac(value: bool) -> Completer:
    def complete(vcpu: KvmVcpu, instruction: Instruction, regs: k.kvm_regs) -> int | None:
        regs.rflags = regs.rflags | FLAG_AC if value else regs.rflags & ~FLAG_AC
        return DONE
    return complete


def _int3(vcpu: KvmVcpu, instruction: Instruction, regs: k.kvm_regs) -> int | None:
    return BP_VECTOR


def _fwait(vcpu: KvmVcpu, instruction: Instruction, regs: k.kvm_regs) -> int | None:
    sregs = k.kvm_sregs()
    vcpu.ioctl(k.KVM_GET_SREGS, sregs, "KVM_GET_SREGS")
    if sregs.cr0 & CR0_MP and sregs.cr0 & CR0_TS:
        return NM_VECTOR
    fpu = k.kvm_fpu()
    vcpu.ioctl(k.KVM_GET_FPU, fpu, "KVM_GET_FPU")
    if fpu.fsw & FSW_ES and sregs.cr0 & CR0_NE:
        return MF_VECTOR
    return DONE


def _popcnt(vcpu: KvmVcpu, instruction: Instruction, regs: k.kvm_regs) -> int | None:
    if instruction.op1_kind != OpKind.REGISTER:
        return None
    source_reg, dest_reg = instruction.op1_register, instruction.op0_register
    size = RegisterExt.size(source_reg)
    source = getattr(regs, _GPR_FIELDS[RegisterExt.full_register(source_reg)])
    source &= (1 << (8 * size)) - 1
    field = _GPR_FIELDS[RegisterExt.full_register(dest_reg)]
    count = bin(source).count("1")
    if size == 2:  # a 16-bit destination keeps bits 63:16; 32-bit zero-extends
        count |= getattr(regs, field) & ~0xFFFF & _MASK64
    setattr(regs, field, count)
    flags = regs.rflags & ~(FLAG_OF | FLAG_SF | FLAG_ZF | FLAG_AF | FLAG_CF | FLAG_PF)
    regs.rflags = flags | (FLAG_ZF if source == 0 else 0)
    return DONE


COMPLETERS: dict[int, Completer] = {
    Mnemonic.CLAC: _set_ac(False),
    Mnemonic.STAC: _set_ac(True),
    Mnemonic.INT3: _int3,
    Mnemonic.POPCNT: _popcnt,
    Mnemonic.WAIT: _fwait,
}


def complete(vcpu: KvmVcpu, internal: k._ExitInternal, bitness: int, cpl: int) -> str | None:
    """Complete the instruction of an emulation failure; its mnemonic name, or None."""
    if cpl != 0:
        return None
    regs = k.kvm_regs()
    vcpu.ioctl(k.KVM_GET_REGS, regs, "KVM_GET_REGS")
    instruction = failed_instruction(internal, bitness, regs.rip)
    if instruction is None:
        return None
    completer = COMPLETERS.get(instruction.mnemonic)
    if completer is None:
        return None
    regs.rip = (regs.rip + instruction.len) & _MASK64
    outcome = completer(vcpu, instruction, regs)
    if outcome is None:
        return None
    vcpu.ioctl(k.KVM_SET_REGS, regs, "KVM_SET_REGS")  # clears a pending exception
    if outcome != DONE:
        _deliver_exception(vcpu, outcome)
    return _MNEMONIC_NAMES[instruction.mnemonic]


def _deliver_exception(vcpu: KvmVcpu, vector: int) -> None:
    """Queue an exception without error code for KVM to deliver at the next entry."""
    events = k.kvm_vcpu_events()
    vcpu.ioctl(k.KVM_GET_VCPU_EVENTS, events, "KVM_GET_VCPU_EVENTS")
    events.exception.injected = 1
    events.exception.nr = vector
    events.exception.has_error_code = 0
    events.exception.error_code = 0
    events.flags = 0
    vcpu.ioctl(k.KVM_SET_VCPU_EVENTS, events, "KVM_SET_VCPU_EVENTS")


_MNEMONIC_NAMES = {Mnemonic.CLAC: "clac", Mnemonic.STAC: "stac", Mnemonic.INT3: "int3",
                   Mnemonic.POPCNT: "popcnt", Mnemonic.WAIT: "fwait"}
