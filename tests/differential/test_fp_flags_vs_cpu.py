"""FP exception-flag corner cases found by the difftest FP families, against the real CPU.

Each case is one instruction on fixed operands, run natively and in the engine
(interp and jit) from the same state; MXCSR / the x87 status word and the result
must agree.  The classes (SDM Vol. 1 §4.9.2, §8.5.3-4, §11.5.2.3-4):

- SSE with OE or UE unmasked (#XM): PE only if the rounding with unbounded
  exponent range was inexact (difftest --mode 64 --seed 1 --index 129).
- A denormal divided by zero: ZE only, no DE (ssefp seed 20261207 indices 85, 6586).
- x87 FST to memory with OE or UE unmasked: nothing stored, and no PE.
- x87 FSCALE overflowing (underflowing) even after the 2**24576 bias adjustment
  with OE (UE) unmasked: a signed infinity, C1 = 1 (zero, C1 = 0) with PE, in every
  rounding mode (x87 seed 20261207 index 5307).
"""

from __future__ import annotations

import struct

import pytest
from iced_x86 import Code, Instruction, Register

from pyvmm.difftest import simd
from pyvmm.difftest.encode import encode_case
from pyvmm.difftest.generator import LABEL_BASE, LABEL_GROUP, LABEL_STEP
from pyvmm.difftest.generator import TestCase as Case
from pyvmm.difftest.native_side import run_native
from pyvmm.difftest.runner import load_engine, make_engine_side
from pyvmm.difftest.x87gen import SAVE_OFFSET, _mem
from pyvmm.oracle.layout import DATA_BASE, DATA_SIZE

# (instruction, MXCSR, xmm0, xmm1): instruction xmm0, xmm1
SSE_CASES = [
    ("ADDPS_XMM_XMMM128", 0x1B80, 0x7F000000, 0x7F000000),  # OE unmasked, exact 2**128
    ("ADDPS_XMM_XMMM128", 0x1B80, 0x7F7FFFFF, 0x7F000001),  # OE unmasked, exact 3*2**127
    ("MULPS_XMM_XMMM128", 0x1B80, 0x7F7FFFFF, 0x40000001),  # OE unmasked, inexact
    ("MULSS_XMM_XMMM32", 0x1780, 0x00400001, 0x80000003),  # UE unmasked, 24-bit product
    ("MULSS_XMM_XMMM32", 0x1780, 0x0D800001, 0x30C00000),  # UE unmasked, inexact
    ("DIVSD_XMM_XMMM64", 0x1780, 0x0010000000000001, 0x47F0000000000001),  # UE, exact
    ("CVTSD2SS_XMM_XMMM64", 0x1780, 0, 0x8000000000000003),  # DE and UE, no PE
    ("DIVSS_XMM_XMMM32", 0x1F80, 0x00400000, 0),  # denormal / 0: ZE only
    ("DIVPS_XMM_XMMM128", 0x1F80, 0x80000000_007F816A, 0x3F800000_00000000),
]

PI = 0x4000_C90FDAA22168C235
# (FCW, ST(1), ST(0) as m80fp, instruction): FST ST(0) to memory or FSCALE
X87_CASES = [
    (0x0377, 0, 0x40C7_8000000000000000, Code.FST_M32FP),  # OE unmasked, exact
    (0x0377, 0, 0x40C7_8000000001000000, Code.FST_M32FP),  # OE unmasked, inexact
    (0x036F, 0, 0x3F73_8000080000000000, Code.FST_M32FP),  # UE unmasked, 24 bits
    (0x036F, 0, 0x3F73_8000000001000000, Code.FST_M32FP),  # UE unmasked, inexact
    (0x036F, 0, 0x3C00_8000000001000000, Code.FST_M64FP),
    *((fcw, 0x403C_9A9D15C401E805B4, PI, Code.FSCALE)  # PI * 2**(2**61...): OE unmasked
      for fcw in (0x0377, 0x0777, 0x0B77, 0x0F77)),
    *((fcw, 0xC03C_9A9D15C401E805B4, PI, Code.FSCALE)  # and 2**-(2**61...): UE unmasked
      for fcw in (0x036F, 0x076F, 0x0B6F, 0x0F6F)),
    (0x076F, 0xC00E_A000000000000000, 0x3FFF_C000000000000001, Code.FSCALE),  # 2**-16384
    (0x076F, 0xC00E_9FFE000000000000, 0x3FFF_C000000000000001, Code.FSCALE),  # 2**-16382
]


def _labelled(body: list[Instruction]) -> int:
    for k, ins in enumerate(body):
        ins.ip = LABEL_BASE[64] + k * LABEL_STEP
    return (len(body) * LABEL_STEP) // LABEL_GROUP + 1


def _sse_case(code: str, mxcsr: int, a: int, b: int) -> Case:
    body = [Instruction.create_reg_reg(getattr(Code, code), Register.XMM0, Register.XMM1)]
    image = bytearray(512)
    struct.pack_into("<HII", image, 0, 0x037F, 0, 0)
    struct.pack_into("<II", image, simd.FX_MXCSR, mxcsr, 0xFFFF)
    image[simd.FX_XMM:simd.FX_XMM + 16] = a.to_bytes(16, "little")
    image[simd.FX_XMM + 16:simd.FX_XMM + 32] = b.to_bytes(16, "little")
    return Case(64, 0, 0, body, [0] * 16, 0x2, bytes(DATA_SIZE), _labelled(body),
                    fxsave=bytes(image))


def _x87_case(fcw: int, st1: int, st0: int, code: int) -> Case:
    data = bytearray(DATA_SIZE)
    struct.pack_into("<H", data, 0, fcw)
    data[0x10:0x1A] = st1.to_bytes(10, "little")
    data[0x30:0x3A] = st0.to_bytes(10, "little")
    op = Instruction.create(code) if code == Code.FSCALE else \
        Instruction.create_mem(code, _mem(0x20))
    body = [Instruction.create(Code.FNINIT), Instruction.create_mem(Code.FLDCW_M2BYTE, _mem(0)),
            Instruction.create_mem(Code.FLD_M80FP, _mem(0x10)),
            Instruction.create_mem(Code.FLD_M80FP, _mem(0x30)), op,
            Instruction.create_mem(Code.FNSAVE_M108BYTE, _mem(SAVE_OFFSET))]
    gprs = [0] * 16
    gprs[3], gprs[4] = DATA_BASE, DATA_BASE + DATA_SIZE - 0x100
    return Case(64, 0, 0, body, gprs, 0x2, bytes(data), _labelled(body), (Register.RBX,))


@pytest.fixture(scope="module", params=["interp", "jit"])
def engine_side(request):
    return make_engine_side(load_engine(request.param))


def _both(native_runner, engine_side, case: Case):
    ok, reason = native_runner.supports(64)
    if not ok:
        pytest.skip(reason)
    enc = encode_case(case, native_runner.info.exit_stub)
    return run_native(native_runner, enc), engine_side(enc)


def _id(value: object) -> str:
    return f"{value:#x}" if isinstance(value, int) else str(value)


@pytest.mark.parametrize(("code", "mxcsr", "a", "b"), SSE_CASES, ids=_id)
def test_sse_flags_agree_with_the_cpu(native_runner, engine_side, code, mxcsr, a, b):
    native, engine = _both(native_runner, engine_side, _sse_case(code, mxcsr, a, b))
    assert (engine.vector, simd.mxcsr_of(engine.fxsave), simd.xmm_of(engine.fxsave, 0)) == \
        (native.vector, simd.mxcsr_of(native.fxsave), simd.xmm_of(native.fxsave, 0))


def _x87_state(data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """FSW, the tag word and ST(0)-ST(7) of the FNSAVE image (Vol. 1 Figure 8-10; the
    pointers are left out, see x87gen.FOP_OFFSET), and the store's destination."""
    image = data[SAVE_OFFSET:SAVE_OFFSET + 108]
    return image[4:6], image[8:10], image[28:108], data[0x20:0x28]


@pytest.mark.parametrize(("fcw", "st1", "st0", "code"), X87_CASES, ids=_id)
def test_x87_flags_agree_with_the_cpu(native_runner, engine_side, fcw, st1, st0, code):
    native, engine = _both(native_runner, engine_side, _x87_case(fcw, st1, st0, code))
    assert _x87_state(engine.data) == _x87_state(native.data)
