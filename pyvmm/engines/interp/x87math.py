"""Real functions for the x87 transcendental instructions, in exact integer arithmetic.

The x87's FSIN, FCOS, FPTAN, FPATAN, F2XM1, FYL2X and FYL2XP1 (SDM Vol. 2A
instruction pages) return results that are not correctly rounded on real
processors (Vol. 1 §8.3.10: "within 1 ulp" on Pentium and later for the
stated domains).  This module computes each function of the operands'
exact rational values to WORK fractional bits with integer-only fixed-point
series (never Python floats), and returns `(sig, exp, sticky)` for
softfloat.round_pack: the interpreter's results are the exact values
rounded by FCW.PC/RC, which lie within that 1-ulp bound of the hardware's.

Argument reduction for FSIN/FCOS/FPTAN is exact arithmetic with the
processor's own 66-bit value of pi (§8.3.8), so large arguments agree with
the hardware too.
"""

from __future__ import annotations

from fractions import Fraction
from math import isqrt

WORK = 192  # fractional bits of the fixed-point intermediates
PI_BITS = WORK + 80
ONE = 1 << WORK


def pi_fixed(bits: int) -> int:
    """pi * 2**bits (Machin: pi = 16 atan(1/5) - 4 atan(1/239))."""
    scale = 1 << (bits + 16)

    def arctan_inv(n: int) -> int:
        total, term, k, sign = 0, scale // n, 1, 1
        while term:
            total += sign * (term // k)
            term //= n * n
            k += 2
            sign = -sign
        return total
    return (16 * arctan_inv(5) - 4 * arctan_inv(239)) >> 16


PI = pi_fixed(PI_BITS)              # pi * 2**PI_BITS
PI_W = PI >> (PI_BITS - WORK)        # pi * 2**WORK


def to_fixed(x: Fraction) -> int:
    """x * 2**WORK, rounded toward -infinity."""
    return (x.numerator << WORK) // x.denominator


def _mul(a: int, b: int) -> int:
    return (a * b) >> WORK


def _div(a: int, b: int) -> int:
    return (a << WORK) // b


def _sin_cos_small(r: int) -> tuple[int, int]:
    """(sin r, cos r) in fixed point, |r| <= pi/4."""
    if r < 0:  # the series run on magnitudes (floor shifts of negatives never reach 0)
        s, c = _sin_cos_small(-r)
        return -s, c
    r2 = _mul(r, r)
    s, term, k = r, r, 1
    while term:
        term = -_mul(term, r2) // ((k + 1) * (k + 2))
        s += term
        k += 2
    c, term, k = ONE, ONE, 0
    while term:
        term = -_mul(term, r2) // ((k + 1) * (k + 2))
        c += term
        k += 2
    return s, c


# The x87 reduces FSIN/FCOS/FSINCOS/FPTAN arguments with its internal 66-bit value of pi
# (SDM Vol. 1 §8.3.8, "Approximation of Pi"); measured on the host: the results follow
# this value, not the true pi (tests/differential/test_x87_transcendental_vs_cpu.py).
PI66 = Fraction((PI + (1 << (PI_BITS - 65))) >> (PI_BITS - 64), 1 << 64)


def reduce_x87(x: Fraction) -> tuple[int, Fraction]:
    """(q mod 4, r) with x = q * PI66/2 + r, |r| <= PI66/4: the hardware's reduction."""
    half = PI66 / 2
    t = x / half
    q = (t.numerator + t.denominator // 2) // t.denominator  # nearest
    return q & 3, x - q * half


def _exp_small(t: int) -> int:
    """e**t in fixed point, |t| <= 1."""
    if t < 0:
        return _div(ONE, _exp_small(-t))
    total, term, k = ONE, ONE, 1
    while term:
        term = _mul(term, t) // k
        total += term
        k += 1
    return total


def _atanh_series(z: int) -> int:
    """atanh z in fixed point, |z| <= 1/3."""
    if z < 0:
        return -_atanh_series(-z)
    z2 = _mul(z, z)
    total, term, k = z, z, 1
    while term:
        term = _mul(term, z2)
        k += 2
        total += term // k
    return total


LN2 = 2 * _atanh_series(_div(ONE, 3 * ONE))  # ln 2 = 2 atanh(1/3)


LN2_F = Fraction(LN2, ONE)
TINY = Fraction(1, 1 << 64)  # below this, the leading series terms in Fractions


def fixed(value: int) -> Fraction:
    return Fraction(value, ONE)


def sin_cos_f(x: Fraction) -> tuple[Fraction, Fraction]:
    """(sin x, cos x) as the x87 computes them (reduction by PI66); a tiny reduced
    argument keeps its relative precision."""
    q, r = reduce_x87(x)
    if abs(r) < TINY:
        s, c = r - r ** 3 / 6, 1 - r * r / 2
    else:
        si, ci = _sin_cos_small(to_fixed(r))
        s, c = fixed(si), fixed(ci)
    return ((s, c), (c, -s), (-s, -c), (-c, s))[q]


def exp2m1(x: Fraction) -> Fraction:
    """2**x - 1 for |x| <= 1 (F2XM1's domain)."""
    if abs(x) < TINY:
        t = x * LN2_F
        return t + t * t / 2
    return fixed(_exp_small(_mul(to_fixed(x), LN2)) - ONE)


def log2(y: Fraction) -> Fraction:
    """log2 y, y > 0."""
    k = y.numerator.bit_length() - y.denominator.bit_length()
    m = y / (Fraction(2) ** k)  # m in [1/2, 2)
    if m < 1:
        m, k = m * 2, k - 1
    if m == 1:
        return Fraction(k)
    return k + _ln_ratio((m - 1) / (m + 1)) / LN2_F


def _ln_ratio(z: Fraction) -> Fraction:
    """2 atanh z = ln((1+z)/(1-z)), |z| <= 1/3."""
    if abs(z) < TINY:
        return 2 * (z + z ** 3 / 3)
    return fixed(2 * _atanh_series(to_fixed(z)))


def log2p1(x: Fraction) -> Fraction:
    """log2(1 + x), keeping precision for small x (FYL2XP1)."""
    z = x / (2 + x)  # ln(1+x) = 2 atanh(x / (2+x))
    if abs(z) > Fraction(1, 3):
        return log2(1 + x)
    return _ln_ratio(z) / LN2_F


def _atan_unit(z: int) -> int:
    """atan z in fixed point, 0 <= z <= 1 (halving the angle until small, then a series)."""
    halvings = 0
    while z > ONE >> 3:
        # atan z = 2 atan(z / (1 + sqrt(1 + z*z)))
        root = isqrt((ONE + _mul(z, z)) << WORK)
        z = _div(z, ONE + root)
        halvings += 1
    z2 = _mul(z, z)
    total, term, k, sign = z, z, 1, 1
    while term:
        term = _mul(term, z2)
        k += 2
        sign = -sign
        total += sign * (term // k)
    return total << halvings


PI_F = Fraction(PI_W, ONE)


def atan2(y: Fraction, x: Fraction) -> Fraction:
    """atan2(y, x) for y, x not both zero (FPATAN: ST(1), ST(0))."""
    ay, ax = abs(y), abs(x)
    if ay <= ax:
        t = ay / ax
        base = t - t ** 3 / 3 if t < TINY else fixed(_atan_unit(to_fixed(t)))
    else:
        t = ax / ay
        small = t - t ** 3 / 3 if t < TINY else fixed(_atan_unit(to_fixed(t)))
        base = PI_F / 2 - small
    angle = PI_F - base if x < 0 else base
    return -angle if y < 0 else angle


def round_parts(value: Fraction, bits: int = 96) -> tuple[int, int, int]:
    """(sign, sig, exp) with |value| = (sig + fraction) * 2**exp, sig of `bits` bits:
    for softfloat.round_pack with sticky=True (the value is an approximation of an
    irrational result, never exactly on a rounding boundary)."""
    sign = 1 if value < 0 else 0
    v = abs(value)
    e = v.numerator.bit_length() - v.denominator.bit_length() - bits
    sig = (v.numerator << -e) // v.denominator if e < 0 else v.numerator // (v.denominator << e)
    return sign, sig, e
