"""The ctypes mirror of the KVM ABI and the pure conversions (no /dev/kvm needed)."""

from __future__ import annotations

import ctypes

from test_kvm_state import _fpu_image

from pyvmm.cpu.state import CpuState
from pyvmm.engines.kvm import ioctls as k
from pyvmm.engines.kvm import kick, stats
from pyvmm.engines.kvm import state as conv


def test_fxsave_conversion_is_lossless():
    image = _fpu_image()
    assert conv.fpu_to_fxsave(conv.fxsave_to_fpu(image)) == image
    assert image[24:28] == (0x1FA0).to_bytes(4, "little")  # MXCSR at byte 24 (SDM Table 10-2)
    assert image[160:176] == bytes(range(16))  # XMM0 at byte 160


def test_struct_layouts_match_the_kernel_abi():
    # Sizes from <asm/kvm.h> / <linux/kvm.h>; they are encoded in the ioctl numbers.
    assert ctypes.sizeof(k.kvm_regs) == 144
    assert ctypes.sizeof(k.kvm_sregs) == 312
    assert ctypes.sizeof(k.kvm_fpu) == 416
    assert ctypes.sizeof(k.kvm_vcpu_events) == 64
    assert ctypes.sizeof(k.kvm_debugregs) == 128
    assert ctypes.sizeof(k.kvm_cpuid_entry2) == 40
    assert k.kvm_run.exit.offset == 32
    assert k.KVM_GET_SREGS == 0x8138AE83
    assert k.KVM_SET_USER_MEMORY_REGION == 0x4020AE46
    assert ctypes.sizeof(k.kvm_stats_header) == 24 and ctypes.sizeof(k.kvm_stats_desc) == 16
    assert k.KVM_GET_STATS_FD == 0xAECE


def test_a_statistic_is_found_by_name_past_its_descriptors():
    """The KVM_GET_STATS_FD layout (api.rst 4.133): header, id string, descriptors of
    16 bytes plus name_size each, values at data_offset + the descriptor's offset."""
    name_size = 48
    descs = [(b"halt_successful_poll", 0), (b"halt_wait_ns", 8)]
    desc_offset = 24 + 64
    data_offset = desc_offset + len(descs) * (16 + name_size)
    head = k.kvm_stats_header(name_size=name_size, num_desc=len(descs), id_offset=24,
                              desc_offset=desc_offset, data_offset=data_offset)
    data = bytearray(bytes(head) + b"kvm-1/vcpu0".ljust(64, b"\0"))
    for name, offset in descs:
        data += bytes(k.kvm_stats_desc(size=1, offset=offset)) + name.ljust(name_size, b"\0")
    assert stats.stat_offset(bytes(data), "halt_wait_ns") == data_offset + 8
    assert stats.stat_offset(bytes(data), "halt_wait") is None


def test_xsave_legacy_region_is_the_fxsave_image():
    image = _fpu_image()
    xsave = k.kvm_xsave()
    conv.fxsave_into_xsave(image, xsave)
    assert conv.xsave_to_fxsave(xsave) == image
    xstate_bv = int.from_bytes(bytes(xsave.region[512:520]), "little")
    assert xstate_bv & 0x3 == 0x3  # x87 and SSE marked present


def test_regs_and_sregs_conversion_round_trip():
    state = CpuState()
    state.gprs = list(range(100, 116))
    state.rip, state.rflags, state.cr3, state.efer = 0x1234, 0x202, 0x9000, 0x500
    state.segments["fs"].base = 0xABCDEF
    back = CpuState()
    conv.regs_into_state(conv.regs_from_state(state), back)
    conv.sregs_into_state(conv.sregs_from_state(state), back)
    assert back == state


def test_sigset_bits_use_the_kernel_numbering():
    assert kick.sigset_bits({kick.KICK_SIGNAL}) == 1 << (int(kick.KICK_SIGNAL) - 1)
    assert kick.sigset_bits(set()) == 0
