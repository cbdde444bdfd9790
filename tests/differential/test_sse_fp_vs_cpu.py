"""SSE/SSE2 floating point: the interpreter against the real CPU.

The difftest families `ssefp` and `sse2fp` (random blocks of the arithmetic,
compare and conversion instructions over special operands -- +-0, denormals,
+-inf, QNaN/SNaN, the ends of the ranges -- and random MXCSR: rounding,
DAZ, FTZ, unmasked exceptions -> #XM) must agree exactly.  The 10,000-block
runs are `python -m pyvmm.difftest --families ssefp|sse2fp --mode all
--count 10000`.

RCPPS/RSQRTPS are approximations whose bits differ by vendor: the SDM
("RCPPS", "RSQRTPS") promises |relative error| <= 1.5 * 2**-12.  Both the host
and the interpreter must meet that bound on normal operands, and agree
exactly on the special ones (zeros, infinities, NaNs, negative operands of
RSQRT, denormals).
"""

from __future__ import annotations

import random
import struct
from fractions import Fraction

import pytest
from iced_x86 import BlockEncoder, Code, Instruction, MemoryOperand, Register
from iced_x86 import Mnemonic as M

from pyvmm.difftest.runner import load_engine, make_engine_side, run_cases
from pyvmm.difftest.simd import fp_value
from pyvmm.engines.interp import softfloat as sf
from pyvmm.engines.interp.semantics.sse_float import ROWS
from pyvmm.oracle.layout import CODE_BASE, DATA_BASE, DATA_SIZE

pytestmark = pytest.mark.timeout(600)

SEED = 20261207
COUNT = 60
BOUND = Fraction(3, 2) * Fraction(1, 2 ** 12)


@pytest.mark.parametrize("family", ["ssefp", "sse2fp"])
@pytest.mark.parametrize("mode", [64, 32, 16])
def test_fp_family_agrees_with_the_cpu(native_runner, mode, family):
    ok, reason = native_runner.supports(mode)
    if not ok:
        pytest.skip(reason)
    side = make_engine_side(load_engine("interp"))
    summary = run_cases(native_runner, side, mode, SEED, range(COUNT), length=8,
                        families=(family,))
    reports = "\n\n".join(d.report() for d in summary.disagreements[:5])
    assert not summary.disagreements, f"{summary.line()}\n\n{reports}"
    assert summary.total == COUNT


def _native_approximations(runner, values: list[int]) -> list[tuple[int, int]]:
    """(RCPSS, RSQRTSS) of each binary32 value, computed by the host CPU."""
    data = bytearray(DATA_SIZE)
    body = []
    for i, v in enumerate(values):
        struct.pack_into("<I", data, 16 * i, v)
        mem = MemoryOperand(Register.RBX, displ=16 * i, displ_size=8)
        body.append(Instruction.create_reg_mem(Code.RCPSS_XMM_XMMM32, Register.XMM1, mem))
        body.append(Instruction.create_reg_mem(Code.RSQRTSS_XMM_XMMM32, Register.XMM2, mem))
        body.append(Instruction.create_mem_reg(Code.MOVSS_XMMM32_XMM,
                                               MemoryOperand(Register.RBX, displ=16 * i + 4,
                                                             displ_size=8), Register.XMM1))
        body.append(Instruction.create_mem_reg(Code.MOVSS_XMMM32_XMM,
                                               MemoryOperand(Register.RBX, displ=16 * i + 8,
                                                             displ_size=8), Register.XMM2))
    body.append(Instruction.create_branch(Code.JMP_REL32_64, runner.info.exit_stub))
    encoder = BlockEncoder(64)
    encoder.add_many(body)
    code = encoder.encode(CODE_BASE)
    gprs = [0] * 16
    gprs[3] = DATA_BASE
    result = runner.run(64, code, gprs, 0x2, bytes(data), CODE_BASE + len(code))
    assert result.vector is None, result
    return [struct.unpack_from("<II", result.data, 16 * i + 4) for i in range(len(values))]


def _ours(mnemonic: int, value: int) -> sf.Result:
    lane, fmt, _ = ROWS[mnemonic]
    return lane(sf.Env(), fmt, 0, value)


def _exact(value: int, root: bool) -> Fraction:
    x = sf.to_fraction(sf.unpack(sf.F32, value))
    if not root:
        return 1 / x
    # 1/sqrt(x) to far more precision than the bound needs
    r, e, _ = sf.exact_sqrt(*_sig_exp(value), 80)
    return 1 / (Fraction(r) * Fraction(2) ** e)


def _sig_exp(value: int) -> tuple[int, int]:
    v = sf.unpack(sf.F32, value)
    return v.sig, v.exp


def _within_bound(approx: int, exact: Fraction) -> bool:
    got = sf.to_fraction(sf.unpack(sf.F32, approx))
    return abs(got - exact) <= BOUND * abs(exact)


@pytest.mark.parametrize("seed", range(2))
def test_rcp_and_rsqrt_meet_the_sdm_bound_and_the_cpus_specials(native_runner, seed):
    rng = random.Random(seed)
    values = [fp_value(rng, 32) for _ in range(400)]
    values += [0, 1 << 31, 0x7F800000, 0xFF800000, 0x7FC00001, 0x7F800001, 0x00000001,
               0x80400000, 0x3F800000, 0xBF800000]
    native = _native_approximations(native_runner, values)
    bad = []
    for value, (n_rcp, n_rsqrt) in zip(values, native, strict=True):
        v = sf.unpack(sf.F32, value)
        for mnemonic, got_native, root in ((M.RCPSS, n_rcp, False),
                                           (M.RSQRTSS, n_rsqrt, True)):
            ours = _ours(mnemonic, value)
            assert ours.flags == 0  # RCP/RSQRT raise no MXCSR flags
            exp = v.exp + v.sig.bit_length() - 1 if v.cls == sf.Cls.NORMAL else 0
            special = (v.cls != sf.Cls.NORMAL or (root and v.sign)
                       or (not root and exp >= 125))  # tiny results: implementation's choice
            if special:
                if not (not root and exp >= 125) and ours.bits != got_native:
                    bad.append((hex(value), mnemonic, hex(got_native), hex(ours.bits)))
                continue
            exact = _exact(value, root)
            if not _within_bound(got_native, exact) or not _within_bound(ours.bits, exact):
                bad.append((hex(value), mnemonic, hex(got_native), hex(ours.bits)))
    assert not bad, f"{len(bad)} differ, first: {bad[:8]}"
