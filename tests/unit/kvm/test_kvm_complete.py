"""pyvmm/engines/kvm/complete.py: instructions KVM's emulator refused, completed as the SDM says.

No /dev/kvm needed: the completers work on a kvm_regs structure and a fake
vcpu that records the ioctls they would issue.
"""

from __future__ import annotations

from pyvmm.cpu.state import FLAG_AC, FLAG_CF, FLAG_RESERVED1, FLAG_ZF
from pyvmm.engines.kvm import complete
from pyvmm.engines.kvm import ioctls as k


class FakeVcpu:
    def __init__(self, regs: k.kvm_regs, cr0: int = 0x80050033) -> None:
        self.regs, self.cr0, self.events = regs, cr0, None

    def ioctl(self, request: int, struct, what: str) -> None:  # noqa: ANN001
        if request == k.KVM_GET_REGS:
            ctypes_copy(self.regs, struct)
        elif request == k.KVM_SET_REGS:
            ctypes_copy(struct, self.regs)
        elif request == k.KVM_GET_SREGS:
            struct.cr0 = self.cr0
        elif request == k.KVM_SET_VCPU_EVENTS:
            self.events = (struct.exception.injected, struct.exception.nr)


def ctypes_copy(source, target) -> None:  # noqa: ANN001
    for name, _ in source._fields_:
        setattr(target, name, getattr(source, name))


def _failure(code: bytes) -> k._ExitInternal:
    """struct emulation_failure as KVM fills it: flags, then size and 15 bytes."""
    internal = k._ExitInternal()
    internal.suberror = complete.KVM_INTERNAL_ERROR_EMULATION
    internal.ndata = 3
    internal.data[0] = complete.FLAG_INSTRUCTION_BYTES
    raw = bytes([15]) + code.ljust(15, b"\x90")
    internal.data[1] = int.from_bytes(raw[:8], "little")
    internal.data[2] = int.from_bytes(raw[8:], "little")
    return internal


def _run(code: bytes, cpl: int = 0, **values: int) -> tuple[str | None, FakeVcpu]:
    regs = k.kvm_regs(rip=0x1000, rflags=FLAG_RESERVED1)
    for name, value in values.items():
        setattr(regs, name, value)
    vcpu = FakeVcpu(regs)
    return complete.complete(vcpu, _failure(code), 64, cpl), vcpu


def test_clac_and_stac_clear_and_set_ac_and_step_past() -> None:
    name, vcpu = _run(bytes.fromhex("0f01cb"))
    assert name == "stac" and vcpu.regs.rflags & FLAG_AC and vcpu.regs.rip == 0x1003
    name, vcpu = _run(bytes.fromhex("0f01ca"), rflags=FLAG_RESERVED1 | FLAG_AC)
    assert name == "clac" and not vcpu.regs.rflags & FLAG_AC and vcpu.regs.rip == 0x1003


def test_popcnt_counts_and_sets_only_zf() -> None:
    # popcnt rax, rdi
    name, vcpu = _run(bytes.fromhex("f3480fb8c7"), rdi=0xF0F0_0000_0000_0101,
                        rflags=FLAG_RESERVED1 | FLAG_CF)
    assert name == "popcnt" and vcpu.regs.rax == 10 and vcpu.regs.rip == 0x1005
    assert vcpu.regs.rflags == FLAG_RESERVED1  # CF cleared, ZF clear (source != 0)
    name, vcpu = _run(bytes.fromhex("f3480fb8c7"), rdi=0, rax=5)
    assert vcpu.regs.rax == 0 and vcpu.regs.rflags & FLAG_ZF


def test_popcnt_operand_sizes() -> None:
    # popcnt eax, edi: only the low 32 source bits, destination zero-extended
    _, vcpu = _run(bytes.fromhex("f30fb8c7"), rdi=0xFFFF_FFFF_0000_0003, rax=-1 & (2**64 - 1))
    assert vcpu.regs.rax == 2
    # popcnt ax, di: a 16-bit destination keeps bits 63:16
    _, vcpu = _run(bytes.fromhex("66f30fb8c7"), rdi=0x7, rax=0x1234_5678_9ABC_DEF0)
    assert vcpu.regs.rax == 0x1234_5678_9ABC_0003


def test_int3_is_a_trap_delivered_after_the_registers() -> None:
    name, vcpu = _run(b"\xcc")
    assert name == "int3" and vcpu.regs.rip == 0x1001 and vcpu.events == (1, 3)


def test_fwait_raises_nm_with_mp_and_ts() -> None:
    regs = k.kvm_regs(rip=0x1000, rflags=FLAG_RESERVED1)
    vcpu = FakeVcpu(regs, cr0=0x80000033 | complete.CR0_TS)
    assert complete.complete(vcpu, _failure(b"\x9b"), 64, 0) == "fwait"
    assert vcpu.events == (1, complete.NM_VECTOR) and vcpu.regs.rip == 0x1001


def test_outside_ring_0_and_unknown_instructions_are_left_alone() -> None:
    assert _run(bytes.fromhex("0f01ca"), cpl=3)[0] is None
    name, vcpu = _run(bytes.fromhex("480fae2f"))  # xrstor64 [rdi]: not completed
    assert name is None and vcpu.regs.rip == 0x1000
    name, vcpu = _run(bytes.fromhex("f3480fb807"))  # popcnt rax, [rdi]: memory source
    assert name is None and vcpu.regs.rip == 0x1000
