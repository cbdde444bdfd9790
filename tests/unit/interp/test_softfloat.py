"""softfloat against IEEE identities and the host's own IEEE arithmetic.

The host's binary64 (Python float) and binary32 (numpy.float32) arithmetic is
IEEE-754 round-to-nearest-even, so their results and the flags numpy reports
are an independent reference for those formats; the x87 extended format and
the other rounding modes are checked against the real CPU in
tests/differential/test_softfloat_native.py.
"""

from __future__ import annotations

import math
import struct
import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvmm.engines.interp import softfloat as sf

ENV = sf.Env()
bits64 = st.integers(0, (1 << 64) - 1)
bits32 = st.integers(0, (1 << 32) - 1)
finite64 = st.floats(allow_nan=False, allow_infinity=True, width=64)


def f2b(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def b2f(b: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", b))[0]


def same64(bits: int, ref: float) -> bool:
    if math.isnan(ref):
        return sf.unpack(sf.F64, bits).is_nan
    return bits == f2b(ref)


def np32(b: int) -> np.float32:
    return np.frombuffer(struct.pack("<I", b), dtype=np.float32)[0]


def bits_of32(x: np.float32) -> int:
    return struct.unpack("<I", np.float32(x).tobytes())[0]


@settings(max_examples=400)
@given(finite64, finite64)
def test_binary64_matches_host(a: float, b: float) -> None:
    va, vb = sf.unpack(sf.F64, f2b(a)), sf.unpack(sf.F64, f2b(b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refs = {
            "add": np.float64(a) + np.float64(b),
            "sub": np.float64(a) - np.float64(b),
            "mul": np.float64(a) * np.float64(b),
            "div": np.float64(a) / np.float64(b) if b != 0 or True else None,
        }
    got = {
        "add": sf.add(ENV, sf.F64, va, vb).bits,
        "sub": sf.add(ENV, sf.F64, va, vb, subtract=True).bits,
        "mul": sf.mul(ENV, sf.F64, va, vb).bits,
        "div": sf.div(ENV, sf.F64, va, vb).bits,
    }
    for op, ref in refs.items():
        assert same64(got[op], float(ref)), (op, a, b)
    if a >= 0:
        assert same64(sf.sqrt(ENV, sf.F64, va).bits, math.sqrt(a))


@settings(max_examples=400)
@given(bits32, bits32)
def test_binary32_matches_numpy_including_flags(a: int, b: int) -> None:
    x, y = np32(a), np32(b)
    va, vb = sf.unpack(sf.F32, a), sf.unpack(sf.F32, b)
    for name, op, ref in (("add", sf.add, np.add), ("mul", sf.mul, np.multiply),
                          ("div", sf.div, np.divide)):
        with np.errstate(all="raise"):
            try:
                ref_val = ref(x, y)
                raised = set()
            except FloatingPointError as error:
                raised = {str(error).split()[0]}
        with np.errstate(all="ignore"):
            ref_val = ref(x, y)
        r = op(ENV, sf.F32, va, vb)
        if np.isnan(ref_val):
            assert sf.unpack(sf.F32, r.bits).is_nan, name
        else:
            assert r.bits == bits_of32(ref_val), (name, hex(a), hex(b))
        # numpy reports the first of invalid/divide/overflow/underflow it sees.
        if "invalid" in raised:
            assert r.flags & sf.IE
        if "divide" in raised:
            assert r.flags & sf.ZE
        if "overflow" in raised:
            assert r.flags & sf.OE


@given(bits64)
def test_unpack_pack_round_trip_binary64(b: int) -> None:
    v = sf.unpack(sf.F64, b)
    if not v.is_nan:
        assert sf.pack(sf.F64, v) == b
    elif v.cls == sf.Cls.QNAN:
        assert sf.pack(sf.F64, v) == b


@given(st.integers(0, (1 << 80) - 1))
def test_unpack_pack_round_trip_extended(b: int) -> None:
    v = sf.unpack(sf.F80, b)
    if v.cls in (sf.Cls.NORMAL, sf.Cls.ZERO, sf.Cls.INF, sf.Cls.QNAN, sf.Cls.UNSUPPORTED):
        assert sf.pack(sf.F80, v) == b
    if v.finite_nonzero:
        # Any finite extended value widens from itself exactly and converts back.
        assert sf.convert(ENV, sf.F80, v).bits == sf.pack(sf.F80, v)


def test_extended_classes_sdm_table_8_3() -> None:
    c = sf.Cls
    assert sf.unpack(sf.F80, 0x3FFF_8000000000000000).cls == c.NORMAL
    assert sf.unpack(sf.F80, 0x3FFF_0000000000000000).cls == c.UNSUPPORTED  # unnormal
    assert sf.unpack(sf.F80, 0x7FFF_0000000000000000).cls == c.UNSUPPORTED  # pseudo-inf
    assert sf.unpack(sf.F80, 0x7FFF_8000000000000000).cls == c.INF
    assert sf.unpack(sf.F80, 0x7FFF_C000000000000000).cls == c.QNAN
    assert sf.unpack(sf.F80, 0x7FFF_8000000000000001).cls == c.SNAN
    assert sf.unpack(sf.F80, 0x0000_8000000000000000).cls == c.DENORMAL  # pseudo-denormal
    assert sf.unpack(sf.F80, 0x0000_0000000000000001).cls == c.DENORMAL
    assert sf.pack(sf.F80, sf.DEFAULT_NAN) == 0xFFFF_C000000000000000
    assert sf.pack(sf.F64, sf.DEFAULT_NAN) == 0xFFF8_0000_0000_0000
    assert sf.pack(sf.F32, sf.DEFAULT_NAN) == 0xFFC0_0000


@given(st.integers(-(1 << 70), 1 << 70), st.sampled_from([sf.RN, sf.RD, sf.RU, sf.RZ]))
def test_int_round_trip_and_directed_rounding_brackets(n: int, rc: int) -> None:
    env = sf.Env(rounding=rc)
    r = sf.from_int(env, sf.F64, n)
    v = sf.to_fraction(sf.unpack(sf.F64, r.bits))
    assert bool(r.flags & sf.PE) == (v != n)
    if rc == sf.RD:
        assert v <= n
    elif rc == sf.RU:
        assert v >= n
    elif rc == sf.RZ:
        assert abs(v) <= abs(n)
    exact = sf.from_int(env, sf.F80, n) if abs(n) < (1 << 64) else None
    if exact is not None:
        back, flags, _ = sf.to_int(env, sf.unpack(sf.F80, exact.bits), 128)
        assert back == n & ((1 << 128) - 1) and flags == 0


def test_masked_overflow_by_rounding_mode_sdm_4_9_1_4() -> None:
    big = sf.unpack(sf.F64, f2b(1.7e308))
    inf, maxf = f2b(math.inf), f2b(1.7976931348623157e308)
    assert sf.mul(sf.Env(rounding=sf.RN), sf.F64, big, big) == (inf, sf.OE | sf.PE, True)
    assert sf.mul(sf.Env(rounding=sf.RZ), sf.F64, big, big).bits == maxf
    assert sf.mul(sf.Env(rounding=sf.RD), sf.F64, big, big).bits == maxf
    assert sf.mul(sf.Env(rounding=sf.RU), sf.F64, big, big).bits == inf


def test_underflow_masked_only_if_inexact_sdm_4_9_1_5() -> None:
    tiny = sf.unpack(sf.F64, f2b(2.0 ** -1070))
    two = sf.unpack(sf.F64, f2b(2.0))
    exact = sf.div(ENV, sf.F64, tiny, two)  # 2**-1071: a denormal, exact
    assert exact.flags == sf.DE and b2f(exact.bits) == 2.0 ** -1071
    unmasked = sf.div(sf.Env(masks=sf.ALL_FLAGS & ~sf.UE), sf.F64, tiny, two)
    assert unmasked.flags == sf.DE | sf.UE
    three = sf.unpack(sf.F64, f2b(3.0))
    inexact = sf.div(ENV, sf.F64, tiny, three)
    assert inexact.flags == sf.DE | sf.UE | sf.PE
    ftz = sf.div(sf.Env(ftz=True), sf.F64, tiny, three)
    assert ftz.bits == 0 and ftz.flags & sf.UE


def test_unmasked_overflow_underflow_pe_only_if_unbounded_rounding_inexact() -> None:
    # SDM Vol. 1 §11.5.2.3-4: no result is delivered; the host CPU raises PE only when
    # the result rounded with unbounded exponent range is inexact (MULSS/ADDPS, #XM).
    f32 = lambda bits: sf.unpack(sf.F32, bits)  # noqa: E731
    no_oe = sf.Env(masks=sf.ALL_FLAGS & ~sf.OE)
    assert sf.add(no_oe, sf.F32, f32(0x7F000000), f32(0x7F000000)).flags == sf.OE
    assert sf.add(no_oe, sf.F32, f32(0x7F7FFFFF), f32(0x7F000001)).flags == sf.OE  # 3*2**127
    assert sf.mul(no_oe, sf.F32, f32(0x7F7FFFFF), f32(0x40000001)).flags == sf.OE | sf.PE
    no_ue = sf.Env(masks=sf.ALL_FLAGS & ~sf.UE)
    # a denormal product far below 2**-149 but with 24 significant bits: no PE
    assert sf.mul(no_ue, sf.F32, f32(0x00400001), f32(0x80000003)).flags == sf.DE | sf.UE
    assert sf.mul(no_ue, sf.F32, f32(0x0D800001), f32(0x30C00000)).flags == sf.UE | sf.PE


def test_divide_by_zero_hides_denormal_operand_sdm_4_9_2() -> None:
    den, zero = sf.unpack(sf.F32, 0x00400000), sf.unpack(sf.F32, 0)
    r = sf.div(ENV, sf.F32, den, zero)
    assert r == (0x7F800000, sf.ZE, False)
    assert sf.div(ENV, sf.F32, zero, den).flags == sf.DE


def test_x87_precision_control_and_bias_adjust() -> None:
    one = sf.unpack(sf.F80, 0x3FFF_8000000000000000)
    three = sf.unpack(sf.F80, 0x4000_C000000000000000)
    r24 = sf.div(sf.Env(precision=24), sf.F80, one, three)
    assert r24.bits == 0x3FFD_AAAAAB0000000000 and r24.flags == sf.PE
    r64 = sf.div(sf.Env(), sf.F80, one, three)
    assert r64.bits == 0x3FFD_AAAAAAAAAAAAAAAB
    big = sf.unpack(sf.F80, 0x7FFE_8000000000000000)
    env = sf.Env(masks=sf.ALL_FLAGS & ~sf.OE, bias_adjust=True)
    wrapped = sf.mul(env, sf.F80, big, big)
    assert wrapped.flags == sf.OE
    assert wrapped.bits == ((0x7FFE - 0x3FFF) * 2 + 0x3FFF - sf.X87_BIAS_ADJUST) << 64 | 1 << 63


def test_x87_massive_overflow_underflow_after_bias_adjust_sdm_8_5_4() -> None:
    # FSCALE's range: still out of range after the 2**24576 adjustment.  Measured on the
    # host: a signed infinity with C1 = 1, or a signed zero, in every rounding mode.
    for rc in (sf.RN, sf.RD, sf.RU, sf.RZ):
        over = sf.Env(rounding=rc, masks=sf.ALL_FLAGS & ~sf.OE, bias_adjust=True)
        assert sf.round_pack(over, sf.F80, 1, 3, 41000) == (
            sf.infinity(sf.F80, 1), sf.OE | sf.PE, True)
        under = sf.Env(rounding=rc, masks=sf.ALL_FLAGS & ~sf.UE, bias_adjust=True)
        assert sf.round_pack(under, sf.F80, 1, 3, -40961) == (sf.zero(sf.F80, 1), sf.UE | sf.PE,
                                                               False)
    # 3 * 2**-40957 adjusted is 1.5 * 2**-16380: a normal extended, delivered
    under = sf.Env(masks=sf.ALL_FLAGS & ~sf.UE, bias_adjust=True)
    assert sf.round_pack(under, sf.F80, 0, 3, -40957) == (0x0003_C000000000000000, sf.UE, False)


def test_nan_propagation_table_4_7() -> None:
    qa = sf.unpack(sf.F80, 0x7FFF_C000000000000001)
    qb = sf.unpack(sf.F80, 0xFFFF_E000000000000000)
    sn = sf.unpack(sf.F80, 0x7FFF_B000000000000000)
    assert sf.add(ENV, sf.F80, qa, qb).bits == 0xFFFF_E000000000000000  # larger significand
    assert sf.add(ENV, sf.F80, sn, qa) == (0x7FFF_C000000000000001, sf.IE, False)
    sse = sf.Env(nan_rule="sse")
    assert sf.add(sse, sf.F80, qa, qb).bits == 0x7FFF_C000000000000001  # first operand
    inf = sf.unpack(sf.F80, 0x7FFF_8000000000000000)
    ninf = sf.unpack(sf.F80, 0xFFFF_8000000000000000)
    assert sf.add(ENV, sf.F80, inf, ninf) == (0xFFFF_C000000000000000, sf.IE, False)


def test_compare_and_zero_signs() -> None:
    pz, nz = sf.unpack(sf.F64, 0), sf.unpack(sf.F64, 1 << 63)
    assert sf.compare(ENV, pz, nz, signalling=False) == (sf.Order.EQUAL, 0)
    nan = sf.unpack(sf.F64, f2b(math.nan))
    assert sf.compare(ENV, nan, pz, signalling=False) == (sf.Order.UNORDERED, 0)
    assert sf.compare(ENV, nan, pz, signalling=True) == (sf.Order.UNORDERED, sf.IE)
    one = sf.unpack(sf.F64, f2b(1.0))
    assert sf.add(ENV, sf.F64, one, one, subtract=True).bits == 0
    assert sf.add(sf.Env(rounding=sf.RD), sf.F64, one, one, subtract=True).bits == 1 << 63
