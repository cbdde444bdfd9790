"""Exact IEEE-754 binary floating point in Python integers (never Python floats).

One implementation for the three x86 formats, parameterised by `Format`:
binary32, binary64 (SSE, and the x87's m32fp/m64fp) and the x87 double
extended format (80 bits, explicit integer bit J; SDM Vol. 1 §4.2.2, §8.2).

A finite value is held exactly as ``(-1)**sign * sig * 2**exp`` with integer
`sig` and `exp`.  Every operation computes the exact result (or an integer
significand plus a sticky bit) and one rounding routine, `round_pack`, takes
it to a format, a precision and a rounding mode, raising the IEEE exception
flags with the SDM's masked responses (Vol. 1 §4.9 x87/SSE numeric
exceptions, §8.5 x87 exception conditions, §11.5 SSE exceptions):

* IE invalid: SNaN operand, unsupported x87 encoding, inf-inf, 0*inf, 0/0,
  inf/inf, sqrt of a negative, ordered compare with a NaN, integer overflow.
  Masked response: the QNaN "real indefinite" (sign 1, quiet bit only) or
  the integer indefinite (only the top bit set).
* DE denormal operand (masked: the operation proceeds; DAZ treats it as 0).
* ZE divide by zero: a correctly signed infinity.
* OE overflow, decided on the result rounded with unbounded exponent range.
  Masked: infinity or the largest finite number, by rounding mode (§4.9.1.4).
  Unmasked on an x87 register destination (``Env.bias_adjust``): the
  significand rounded and the exponent divided by 2**24576 (§8.5.3); if
  that still overflows (FSCALE), a signed infinity, C1 = 1, with PE.
* UE underflow: tininess is detected after rounding (the result rounded to
  the precision with unbounded exponent range is below 2**emin), as Intel
  processors do.  Masked: UE is reported only if the denormalised result is
  also inexact (§4.9.1.5); with FTZ the result is a signed zero.  Unmasked:
  UE whenever tiny; on x87 the exponent is multiplied by 2**24576, and if
  that is still tiny (FSCALE), a signed zero with PE (measured on the host).
* Unmasked OE/UE without ``bias_adjust`` (SSE, §11.5.2.3-4; x87 stores to
  memory): nothing is delivered, and PE is raised only if the rounding with
  unbounded exponent range was inexact, as the host CPU does for SSE.
* PE inexact: the delivered result differs from the exact one.

NaN propagation follows SDM Vol. 1 §4.8.3.5 Table 4-7 (`Env.nan_rule`):
the x87 takes the QNaN over an SNaN and otherwise the NaN with the larger
significand; SSE takes the first source operand.  An SNaN is delivered quieted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from fractions import Fraction
from math import isqrt
from typing import NamedTuple

# Exception flags, in the bit positions of the x87 status word and MXCSR
# (SDM Vol. 1 §8.1.3, §10.2.3); the masks use the same positions.
IE = 1 << 0
DE = 1 << 1
ZE = 1 << 2
OE = 1 << 3
UE = 1 << 4
PE = 1 << 5
ALL_FLAGS = IE | DE | ZE | OE | UE | PE

# Rounding control, encoded as in FCW.RC and MXCSR.RC (SDM Vol. 1 Table 4-8).
RN = 0  # to nearest, ties to even
RD = 1  # toward -infinity
RU = 2  # toward +infinity
RZ = 3  # toward zero

# x87 precision control FCW.PC -> significand bits (SDM Vol. 1 Table 8-2; 1 is reserved).
PRECISION_CONTROL = {0: 24, 2: 53, 3: 64}

# x87 exponent bias adjustment for unmasked overflow/underflow (SDM Vol. 1 §8.5.3-4).
X87_BIAS_ADJUST = 24576

# Payloads of NaNs are kept left-aligned in 63 bits (the x87 fraction width).
NAN_PAYLOAD_BITS = 63
QUIET_BIT = 1 << (NAN_PAYLOAD_BITS - 1)


@dataclass(frozen=True)
class Format:
    """A binary interchange (or x87 extended) format.

    `sig_bits` is the precision p including the integer bit; `explicit` says
    the integer bit is stored (x87 extended), otherwise it is implicit.
    """

    name: str
    exp_bits: int
    sig_bits: int
    explicit: bool = False

    @property
    def bias(self) -> int:
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def emax(self) -> int:
        return self.bias

    @property
    def emin(self) -> int:
        return 1 - self.bias

    @property
    def frac_bits(self) -> int:
        """Bits stored below the (possibly explicit) integer bit."""
        return self.sig_bits - 1

    @property
    def width(self) -> int:
        return 1 + self.exp_bits + self.frac_bits + (1 if self.explicit else 0)

    @property
    def exp_max_field(self) -> int:
        return (1 << self.exp_bits) - 1


F32 = Format("binary32", 8, 24)
F64 = Format("binary64", 11, 53)
F80 = Format("extended", 15, 64, explicit=True)


class Cls(IntEnum):
    """Operand classes (SDM Vol. 1 Tables 4-3, 8-3; unsupported: §8.2.2)."""

    ZERO = 0
    DENORMAL = 1
    NORMAL = 2
    INF = 3
    QNAN = 4
    SNAN = 5
    UNSUPPORTED = 6  # x87 pseudo-NaN, pseudo-infinity, unnormal


@dataclass(frozen=True, slots=True)
class Value:
    """An unpacked operand.

    Finite: value = (-1)**sign * sig * 2**exp.  NaN: `sig` is the payload
    left-aligned in 63 bits (quiet bit = bit 62), `exp` is 0.  Unsupported
    x87 encodings keep the stored significand and exponent field.
    """

    cls: Cls
    sign: int
    sig: int = 0
    exp: int = 0

    @property
    def is_nan(self) -> bool:
        return self.cls in (Cls.QNAN, Cls.SNAN)

    @property
    def finite_nonzero(self) -> bool:
        return self.cls in (Cls.NORMAL, Cls.DENORMAL)


DEFAULT_NAN = Value(Cls.QNAN, 1, QUIET_BIT)  # the "real indefinite" (SDM Vol. 1 §4.8.3.7)


@dataclass(frozen=True)
class Env:
    """How to round and which exceptions are masked.

    `precision`: significand bits to round to (x87 PC), None = the format's.
    `masks`: exception bits that are masked (FCW bits 0-5, MXCSR bits 7-12 >> 7).
    `bias_adjust`: x87 register destination; unmasked OE/UE deliver the
    exponent-wrapped result.  `ftz`/`daz`: MXCSR flush-to-zero and
    denormals-are-zero (SDM Vol. 1 §10.2.3.3-4).
    """

    rounding: int = RN
    precision: int | None = None
    masks: int = ALL_FLAGS
    nan_rule: str = "x87"
    bias_adjust: bool = False
    ftz: bool = False
    daz: bool = False


class Result(NamedTuple):
    """A packed result, the exception flags raised, and whether rounding
    increased the magnitude (the x87 reports that in C1, SDM Vol. 1 §8.1.3.1)."""

    bits: int
    flags: int
    rounded_up: bool = False


# -- packing ---------------------------------------------------------------

def unpack(fmt: Format, bits: int) -> Value:
    """Classify and unpack a stored value (SDM Vol. 1 §4.2.2, §8.2.2)."""
    frac_mask = (1 << fmt.frac_bits) - 1
    frac = bits & frac_mask
    if fmt.explicit:
        j = (bits >> fmt.frac_bits) & 1
        e_field = (bits >> (fmt.frac_bits + 1)) & fmt.exp_max_field
    else:
        e_field = (bits >> fmt.frac_bits) & fmt.exp_max_field
        j = 1 if 0 < e_field < fmt.exp_max_field else 0
    sign = (bits >> (fmt.width - 1)) & 1
    sig = frac | (j << fmt.frac_bits)
    if e_field == fmt.exp_max_field:
        if fmt.explicit and not j:
            return Value(Cls.UNSUPPORTED, sign, sig, e_field)
        if frac == 0:
            return Value(Cls.INF, sign)
        payload = frac << (NAN_PAYLOAD_BITS - fmt.frac_bits)
        return Value(Cls.QNAN if payload & QUIET_BIT else Cls.SNAN, sign, payload)
    if e_field == 0:
        if sig == 0:
            return Value(Cls.ZERO, sign)
        # Denormal; an x87 pseudo-denormal (J=1) has the same value rule.
        return Value(Cls.DENORMAL, sign, sig, fmt.emin - fmt.frac_bits)
    if fmt.explicit and not j:
        return Value(Cls.UNSUPPORTED, sign, sig, e_field)
    return Value(Cls.NORMAL, sign, sig, e_field - fmt.bias - fmt.frac_bits)


def _pack_fields(fmt: Format, sign: int, e_field: int, sig: int) -> int:
    """Assemble sign, biased exponent and significand (J included for explicit)."""
    if not fmt.explicit:
        sig &= (1 << fmt.frac_bits) - 1
        return (sign << (fmt.width - 1)) | (e_field << fmt.frac_bits) | sig
    return (sign << (fmt.width - 1)) | (e_field << fmt.sig_bits) | sig


def pack(fmt: Format, v: Value) -> int:
    """Pack a value that is exactly representable in `fmt` (or a special)."""
    if v.cls == Cls.ZERO:
        return _pack_fields(fmt, v.sign, 0, 0)
    if v.cls == Cls.INF:
        return _pack_fields(fmt, v.sign, fmt.exp_max_field, 1 << fmt.frac_bits)
    if v.is_nan or v.cls == Cls.UNSUPPORTED:
        payload = v.sig >> (NAN_PAYLOAD_BITS - fmt.frac_bits)
        if v.cls == Cls.UNSUPPORTED and fmt.explicit:
            return _pack_fields(fmt, v.sign, v.exp, v.sig)
        return _pack_fields(fmt, v.sign, fmt.exp_max_field, payload | (1 << fmt.frac_bits))
    return _pack_finite(fmt, v.sign, v.sig, v.exp)


def _exponent_field(fmt: Format, bits: int) -> int:
    return (bits >> (fmt.width - 1 - fmt.exp_bits)) & fmt.exp_max_field


def _pack_finite(fmt: Format, sign: int, m: int, q: int) -> int:
    if m == 0:
        return _pack_fields(fmt, sign, 0, 0)
    top = m.bit_length() - 1 + q
    if top >= fmt.emin:
        shift = fmt.frac_bits - (m.bit_length() - 1)
        sig = m << shift if shift >= 0 else m >> -shift
        return _pack_fields(fmt, sign, top + fmt.bias, sig)
    shift = q - (fmt.emin - fmt.frac_bits)
    return _pack_fields(fmt, sign, 0, m << shift)


def quiet(v: Value) -> Value:
    return Value(Cls.QNAN, v.sign, v.sig | QUIET_BIT)


def nan_bits(fmt: Format, v: Value) -> int:
    """A NaN delivered to `fmt`: quieted, payload truncated from the right."""
    return pack(fmt, quiet(v))


def largest_finite(fmt: Format, sign: int, precision: int | None = None) -> int:
    p = precision or fmt.sig_bits
    return _pack_finite(fmt, sign, (1 << p) - 1, fmt.emax - (p - 1))


def infinity(fmt: Format, sign: int) -> int:
    return pack(fmt, Value(Cls.INF, sign))


def zero(fmt: Format, sign: int) -> int:
    return pack(fmt, Value(Cls.ZERO, sign))


# -- rounding --------------------------------------------------------------

def _round_at(sign: int, sig: int, exp: int, q: int, rc: int) -> tuple[int, bool, bool]:
    """Round sig*2**exp to a multiple of 2**q: (m, inexact, magnitude increased)."""
    shift = q - exp
    if shift <= 0:
        return sig << -shift, False, False
    m = sig >> shift
    rem = sig & ((1 << shift) - 1)
    if not rem:
        return m, False, False
    half = 1 << (shift - 1)
    if rc == RN:
        up = rem > half or (rem == half and m & 1 == 1)
    elif rc == RZ:
        up = False
    elif rc == RD:
        up = sign == 1
    else:
        up = sign == 0
    return m + up, True, up


def round_pack(env: Env, fmt: Format, sign: int, sig: int, exp: int,
               sticky: bool = False) -> Result:
    """Round the exact value (-1)**sign * (sig + sticky*eps) * 2**exp to `fmt`.

    `sticky` says nonzero bits lie below 2**exp; callers supply at least two
    more significand bits than the target precision when they set it.
    """
    if sig == 0 and not sticky:
        return Result(zero(fmt, sign), 0)
    if sticky:
        sig, exp = (sig << 2) | 1, exp - 2
    p = env.precision or fmt.sig_bits
    e = sig.bit_length() - 1 + exp
    q = e - (p - 1)
    m, inexact, up = _round_at(sign, sig, exp, q, env.rounding)
    top = m.bit_length() - 1 + q  # exponent after rounding, unbounded range
    if top > fmt.emax:
        return _overflow(env, fmt, sign, sig, exp, p, inexact)
    if top < fmt.emin:
        return _underflow(env, fmt, sign, sig, exp, p, e, inexact)
    return Result(_pack_finite(fmt, sign, m, q), PE if inexact else 0, up)


def _overflow(env: Env, fmt: Format, sign: int, sig: int, exp: int, p: int,
              inexact: bool) -> Result:
    if not env.masks & OE:
        if env.bias_adjust:
            r = round_pack(Env(env.rounding, env.precision), fmt, sign, sig,
                           exp - X87_BIAS_ADJUST)
            if r.flags & OE:  # massive overflow (FSCALE): a signed infinity (§8.5.4)
                return Result(infinity(fmt, sign), OE | PE, True)
            return Result(r.bits, OE | (r.flags & PE), r.rounded_up)
        # No result is delivered; PE says the unbounded-range rounding was inexact.
        return Result(infinity(fmt, sign), OE | (PE if inexact else 0))
    rc = env.rounding
    to_inf = rc == RN or (rc == RU and sign == 0) or (rc == RD and sign == 1)
    if to_inf:
        return Result(infinity(fmt, sign), OE | PE, True)
    return Result(largest_finite(fmt, sign, p), OE | PE, False)


def _underflow(env: Env, fmt: Format, sign: int, sig: int, exp: int, p: int, e: int,
               inexact: bool) -> Result:
    if not env.masks & UE:
        if env.bias_adjust:
            r = round_pack(Env(env.rounding, env.precision), fmt, sign, sig,
                           exp + X87_BIAS_ADJUST)
            if not _exponent_field(fmt, r.bits):  # massive underflow (FSCALE): a signed 0
                return Result(zero(fmt, sign), UE | PE)
            return Result(r.bits, UE | (r.flags & PE), r.rounded_up)
        # No result is delivered; PE says the unbounded-range rounding was inexact.
        return Result(zero(fmt, sign), UE | (PE if inexact else 0))
    if env.ftz:
        return Result(zero(fmt, sign), UE | PE)
    q = max(e, fmt.emin) - (p - 1)
    m, inexact, up = _round_at(sign, sig, exp, q, env.rounding)
    return Result(_pack_finite(fmt, sign, m, q), (UE | PE) if inexact else 0, up)


# -- operands and NaNs -----------------------------------------------------

def operand(env: Env, v: Value) -> tuple[Value, int]:
    """An arithmetic operand: (value as used, flags raised by reading it)."""
    if v.cls == Cls.DENORMAL:
        if env.daz:
            return Value(Cls.ZERO, v.sign), 0
        return v, DE
    if v.cls in (Cls.SNAN, Cls.UNSUPPORTED):
        return v, IE
    return v, 0


def _pick_nan(env: Env, a: Value, b: Value | None) -> Value:
    if a.cls == Cls.UNSUPPORTED or (b is not None and b.cls == Cls.UNSUPPORTED):
        return DEFAULT_NAN
    if b is None or not b.is_nan:
        return a
    if not a.is_nan:
        return b
    if env.nan_rule == "sse":
        return a
    if a.cls != b.cls:  # x87: the QNaN wins over the SNaN
        return a if a.cls == Cls.QNAN else b
    if a.sig != b.sig:
        return a if a.sig > b.sig else b
    return a if a.sign <= b.sign else b


# An invalid operation or a NaN operand takes priority over a denormal operand
# (SDM Vol. 1 §4.9.2): DE is not reported with them.

def _nan_result(env: Env, fmt: Format, a: Value, b: Value | None, flags: int) -> Result:
    return Result(nan_bits(fmt, _pick_nan(env, a, b)), flags & ~DE)


def _invalid(fmt: Format, flags: int) -> Result:
    return Result(pack(fmt, DEFAULT_NAN), (flags & ~DE) | IE)


def _operands(env: Env, a: Value, b: Value) -> tuple[Value, Value, int]:
    a, fa = operand(env, a)
    b, fb = operand(env, b)
    return a, b, fa | fb


def _any_nan(a: Value, b: Value) -> bool:
    return a.is_nan or b.is_nan or Cls.UNSUPPORTED in (a.cls, b.cls)


def _zero_sum_sign(env: Env) -> int:
    return 1 if env.rounding == RD else 0


# -- arithmetic -------------------------------------------------------------

def add(env: Env, fmt: Format, a: Value, b: Value, subtract: bool = False) -> Result:
    """a + b (or a - b), exactly rounded (SDM Vol. 1 Table 8-8 for specials)."""
    a, b, flags = _operands(env, a, b)
    if _any_nan(a, b):
        return _nan_result(env, fmt, a, b, flags)
    bsign = b.sign ^ subtract
    if a.cls == Cls.INF or b.cls == Cls.INF:
        if a.cls == Cls.INF and b.cls == Cls.INF and a.sign != bsign:
            return _invalid(fmt, flags)
        sign = a.sign if a.cls == Cls.INF else bsign
        return Result(infinity(fmt, sign), flags)
    if a.cls == Cls.ZERO and b.cls == Cls.ZERO:
        sign = a.sign if a.sign == bsign else _zero_sum_sign(env)
        return Result(zero(fmt, sign), flags)
    if b.cls == Cls.ZERO:
        r = round_pack(env, fmt, a.sign, a.sig, a.exp)
        return Result(r.bits, flags | r.flags, r.rounded_up)
    if a.cls == Cls.ZERO:
        r = round_pack(env, fmt, bsign, b.sig, b.exp)
        return Result(r.bits, flags | r.flags, r.rounded_up)
    e = min(a.exp, b.exp)
    total = ((-1) ** a.sign) * (a.sig << (a.exp - e)) + ((-1) ** bsign) * (b.sig << (b.exp - e))
    if total == 0:
        return Result(zero(fmt, _zero_sum_sign(env)), flags)
    r = round_pack(env, fmt, 1 if total < 0 else 0, abs(total), e)
    return Result(r.bits, flags | r.flags, r.rounded_up)


def mul(env: Env, fmt: Format, a: Value, b: Value) -> Result:
    a, b, flags = _operands(env, a, b)
    if _any_nan(a, b):
        return _nan_result(env, fmt, a, b, flags)
    sign = a.sign ^ b.sign
    if Cls.INF in (a.cls, b.cls):
        if Cls.ZERO in (a.cls, b.cls):
            return _invalid(fmt, flags)
        return Result(infinity(fmt, sign), flags)
    if Cls.ZERO in (a.cls, b.cls):
        return Result(zero(fmt, sign), flags)
    r = round_pack(env, fmt, sign, a.sig * b.sig, a.exp + b.exp)
    return Result(r.bits, flags | r.flags, r.rounded_up)


def div(env: Env, fmt: Format, a: Value, b: Value) -> Result:
    a, b, flags = _operands(env, a, b)
    if _any_nan(a, b):
        return _nan_result(env, fmt, a, b, flags)
    sign = a.sign ^ b.sign
    if a.cls == Cls.INF:
        if b.cls == Cls.INF:
            return _invalid(fmt, flags)
        return Result(infinity(fmt, sign), flags)
    if b.cls == Cls.INF:
        return Result(zero(fmt, sign), flags)
    if b.cls == Cls.ZERO:
        if a.cls == Cls.ZERO:
            return _invalid(fmt, flags)
        return Result(infinity(fmt, sign), (flags & ~DE) | ZE)  # ZE hides DE (§4.9.2)
    if a.cls == Cls.ZERO:
        return Result(zero(fmt, sign), flags)
    sig, exp, sticky = exact_quotient(a.sig, a.exp, b.sig, b.exp, fmt.sig_bits + 3)
    r = round_pack(env, fmt, sign, sig, exp, sticky)
    return Result(r.bits, flags | r.flags, r.rounded_up)


def exact_quotient(sa: int, ea: int, sb: int, eb: int, bits: int) -> tuple[int, int, bool]:
    """(q, e, sticky) with sa*2**ea / sb*2**eb in [q, q+1)*2**e, q of >= `bits` bits."""
    shift = max(0, bits + sb.bit_length() - sa.bit_length())
    q, r = divmod(sa << shift, sb)
    return q, ea - eb - shift, r != 0


def exact_sqrt(sig: int, exp: int, bits: int) -> tuple[int, int, bool]:
    """(r, e, sticky) with sqrt(sig*2**exp) in [r, r+1)*2**e, r of >= `bits` bits."""
    shift = max(0, 2 * bits - sig.bit_length())
    if (exp - shift) & 1:
        shift += 1
    s = sig << shift
    r = isqrt(s)
    return r, (exp - shift) // 2, r * r != s


def sqrt(env: Env, fmt: Format, a: Value) -> Result:
    a, flags = operand(env, a)
    if a.is_nan or a.cls == Cls.UNSUPPORTED:
        return _nan_result(env, fmt, a, None, flags)
    if a.cls == Cls.ZERO:
        return Result(zero(fmt, a.sign), flags)
    if a.sign:
        return _invalid(fmt, flags)
    if a.cls == Cls.INF:
        return Result(infinity(fmt, 0), flags)
    sig, exp, sticky = exact_sqrt(a.sig, a.exp, fmt.sig_bits + 3)
    r = round_pack(env, fmt, 0, sig, exp, sticky)
    return Result(r.bits, flags | r.flags, r.rounded_up)


# -- comparison ---------------------------------------------------------------

class Order(IntEnum):
    LESS = 0
    EQUAL = 1
    GREATER = 2
    UNORDERED = 3


def _magnitude_order(a: Value, b: Value) -> int:
    """-1, 0, 1 as |a| is below, equal to or above |b| (non-NaN operands)."""
    rank = {Cls.ZERO: 0, Cls.INF: 2}
    ra, rb = rank.get(a.cls, 1), rank.get(b.cls, 1)
    if ra != rb or ra != 1:
        return (ra > rb) - (ra < rb)
    e = min(a.exp, b.exp)
    ma, mb = a.sig << (a.exp - e), b.sig << (b.exp - e)
    return (ma > mb) - (ma < mb)


def compare(env: Env, a: Value, b: Value, signalling: bool) -> tuple[Order, int]:
    """Compare; IE for an SNaN (any NaN when `signalling`, e.g. FCOM/COMISS)."""
    a, b, flags = _operands(env, a, b)
    if _any_nan(a, b):
        if signalling or Cls.SNAN in (a.cls, b.cls) or Cls.UNSUPPORTED in (a.cls, b.cls):
            flags |= IE
        return Order.UNORDERED, flags & ~DE
    sa = 0 if a.cls == Cls.ZERO else (-1 if a.sign else 1)
    sb = 0 if b.cls == Cls.ZERO else (-1 if b.sign else 1)
    if sa != sb:
        return (Order.LESS if sa < sb else Order.GREATER), flags
    mag = _magnitude_order(a, b) * sa
    return (Order.LESS, Order.EQUAL, Order.GREATER)[mag + 1], flags


def to_fraction(v: Value) -> Fraction:
    """The exact rational value of a finite operand."""
    if v.cls == Cls.ZERO:
        return Fraction(0)
    mag = Fraction(v.sig) * (Fraction(2) ** v.exp)
    return -mag if v.sign else mag


# -- conversions --------------------------------------------------------------

def from_int(env: Env, fmt: Format, n: int) -> Result:
    """A signed integer to floating point (exact when it fits, else rounded)."""
    if n == 0:
        return Result(zero(fmt, 0), 0)
    return round_pack(env, fmt, 1 if n < 0 else 0, abs(n), 0)


def integer_indefinite(width: int) -> int:
    return 1 << (width - 1)


def to_int(env: Env, a: Value, width: int, truncate: bool = False) -> tuple[int, int, bool]:
    """Floating point to a `width`-bit signed integer (two's complement bits).

    Returns (bits, flags, rounded_up).  NaN, infinity or out of range: IE and
    the integer indefinite (SDM Vol. 1 §4.8.3.7).  `truncate` rounds toward
    zero regardless of the rounding mode (FISTTP, CVTT*).
    """
    a, flags = operand(env, a)
    if a.cls == Cls.ZERO:
        return 0, flags, False
    if a.cls not in (Cls.NORMAL, Cls.DENORMAL):
        return integer_indefinite(width), flags | IE, False
    rc = RZ if truncate else env.rounding
    m, inexact, up = _round_at(a.sign, a.sig, a.exp, 0, rc)
    n = -m if a.sign else m
    if not -(1 << (width - 1)) <= n < (1 << (width - 1)):
        return integer_indefinite(width), flags | IE, False
    return n & ((1 << width) - 1), flags | (PE if inexact else 0), up


def convert(env: Env, dst: Format, a: Value) -> Result:
    """Floating point to floating point: exact widening, rounded narrowing."""
    a, flags = operand(env, a)
    if a.is_nan or a.cls == Cls.UNSUPPORTED:
        if a.cls == Cls.UNSUPPORTED:
            return _invalid(dst, flags)
        return Result(nan_bits(dst, a), flags)
    if a.cls in (Cls.ZERO, Cls.INF):
        return Result(pack(dst, a), flags)
    r = round_pack(env, dst, a.sign, a.sig, a.exp)
    return Result(r.bits, flags | r.flags, r.rounded_up)


def round_to_integral(env: Env, fmt: Format, a: Value) -> Result:
    """Round to an integral value in the same format (FRNDINT, ROUNDSS-like)."""
    a, flags = operand(env, a)
    if a.is_nan or a.cls == Cls.UNSUPPORTED:
        return _nan_result(env, fmt, a, None, flags)
    if a.cls in (Cls.ZERO, Cls.INF):
        return Result(pack(fmt, a), flags)
    m, inexact, up = _round_at(a.sign, a.sig, a.exp, 0, env.rounding)
    if m == 0:
        return Result(zero(fmt, a.sign), flags | (PE if inexact else 0), up)
    r = round_pack(env, fmt, a.sign, m, 0)
    return Result(r.bits, flags | r.flags | (PE if inexact else 0), up or r.rounded_up)
