"""Shared pieces of the SSE/SSE2 floating-point groups: MXCSR, lanes, #XM.

Not a group module (the leading underscore keeps `load_groups` from
importing it as one).  sse_float.py, sse_compare.py and sse_convert.py
compute each lane with softfloat.py and hand the per-lane results here.

Facts (Intel SDM Vol. 1):
- §10.2.3 MXCSR: flags IE DE ZE OE UE PE in bits 0-5, DAZ bit 6, the masks
  in bits 7-12 (same order), RC in bits 14:13 (Table 4-8 encoding), FZ bit 15.
- §11.5.1 handling an instruction's SIMD floating-point exceptions: the
  pre-computation exceptions (IE, DE, ZE) of every element are detected
  first; if any of them is unmasked, their flags are set and nothing is
  computed.  Otherwise every element is computed, the post-computation
  flags (OE, UE, PE) join the masked pre-computation ones, and if one of
  those is unmasked the destination is not written.  Flags are sticky.
- §11.5.1 / Vol. 3A §6.15 "Interrupt 19": an unmasked exception raises #XM
  when CR4.OSXMMEXCPT=1, else #UD.
- §4.8.3.5 Table 4-7: SSE delivers the first source operand's NaN when both
  are NaNs (softfloat's `nan_rule="sse"`).
"""

from __future__ import annotations

from pyvmm.cpu.state import CR4_OSXMMEXCPT
from pyvmm.engines.interp import softfloat as sf
from pyvmm.engines.interp.faults import UD, XM, CpuFault

MXCSR_DAZ = 1 << 6
MXCSR_FZ = 1 << 15
MASK_SHIFT = 7
RC_SHIFT = 13
PRE_COMPUTATION = sf.IE | sf.DE | sf.ZE

_ENVS: dict[int, sf.Env] = {}


def env_of(mxcsr: int) -> sf.Env:
    """The softfloat environment MXCSR selects (cached per MXCSR value)."""
    key = mxcsr & 0xFFC0
    env = _ENVS.get(key)
    if env is None:
        env = _ENVS[key] = sf.Env(rounding=(mxcsr >> RC_SHIFT) & 3,
                                  masks=(mxcsr >> MASK_SHIFT) & sf.ALL_FLAGS,
                                  nan_rule="sse", ftz=bool(mxcsr & MXCSR_FZ),
                                  daz=bool(mxcsr & MXCSR_DAZ))
    return env


def simd_fault(cpu) -> CpuFault:  # noqa: ANN001
    """#XM with CR4.OSXMMEXCPT=1, else #UD (SDM Vol. 3A §6.15, Interrupt 19)."""
    return CpuFault(XM) if cpu.cr4 & CR4_OSXMMEXCPT else CpuFault(UD)


def commit(cpu, flags: int) -> None:  # noqa: ANN001
    """Raise the instruction's OR-ed element `flags` in MXCSR; #XM/#UD if one is unmasked.

    The caller writes its destination only after this returns (§11.5.1).
    """
    if not flags:
        return
    unmasked = flags & ~(cpu.mxcsr >> MASK_SHIFT)
    if unmasked & PRE_COMPUTATION:
        cpu.mxcsr |= flags & PRE_COMPUTATION
        raise simd_fault(cpu)
    cpu.mxcsr |= flags
    if unmasked & sf.ALL_FLAGS:
        raise simd_fault(cpu)


def lanes(value: int, bits: int, count: int) -> list[int]:
    mask = (1 << bits) - 1
    return [(value >> (bits * k)) & mask for k in range(count)]


def join(values: list[int], bits: int) -> int:
    out = 0
    for k, v in enumerate(values):
        out |= v << (bits * k)
    return out


def merge(dst: int, results: list[int], bits: int) -> int:
    """`results` in the low lanes of `dst`; dst's bits above them kept."""
    width = bits * len(results)
    return (dst >> width << width) | join(results, bits)


def signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) & 1 else value
