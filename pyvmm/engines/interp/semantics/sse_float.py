"""SSE/SSE2 floating-point arithmetic: ADD SUB MUL DIV SQRT MIN MAX RCP RSQRT (SDM Vol. 2).

One row per mnemonic: the lane operation, the lane format and whether the
instruction is packed (every lane; PS = 4 x binary32, PD = 2 x binary64) or
scalar (SS/SD: the low lane, the destination's upper bits kept).  Each lane
is exact IEEE arithmetic rounded by MXCSR (softfloat.py); MXCSR's flags and
the #XM rule are in _ssefp.py.

Facts (SDM Vol. 2 instruction pages):
- MINPS/MAXPS...: if either operand is a NaN (QNaN too: IE is signalled,
  "Invalid (including QNaN Source Operand)") or both are zeros of either
  sign, the second (source) operand is returned unchanged; otherwise the
  smaller (larger) value.  No rounding, so no OE/UE/PE.
- SQRTPS...: sqrt(-0) = -0, a negative operand is invalid.
- RCPPS/RCPSS/RSQRTPS/RSQRTSS: approximations with relative error at most
  1.5 * 2**-12; they raise no MXCSR flags ("SIMD Floating-Point Exceptions:
  None").  RCP(+-0) = +-inf, RCP(+-inf) = +-0, tiny results flush to a
  signed zero, a NaN returns the QNaN of it; RSQRT(+-0) = +-inf, of a
  negative non-zero operand the QNaN indefinite, RSQRT(+inf) = +0.  This
  CPU's approximation is the exact value rounded to nearest at 12
  significant bits (error <= 2**-12).  Denormal operands are treated as
  zeros of their sign, as the host processors measured do
  (tests/differential/test_sse_fp_vs_cpu.py).
- MIN/MAX under DAZ return a denormal operand as the zero it was read as
  (measured on the host CPU, the difftest ssefp family).
"""

from __future__ import annotations

from collections.abc import Callable

from iced_x86 import Mnemonic as M

from pyvmm.engines.interp import softfloat as sf
from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.semantics._simd import Body, require_features, sse_check
from pyvmm.engines.interp.semantics._ssefp import commit, env_of, lanes, merge

Lane = Callable[[sf.Env, sf.Format, int, int], sf.Result]  # (env, fmt, dst lane, src lane)


def _binary(fn: Callable[..., sf.Result]) -> Lane:
    return lambda env, fmt, x, y: fn(env, fmt, sf.unpack(fmt, x), sf.unpack(fmt, y))


def _sub(env: sf.Env, fmt: sf.Format, a: sf.Value, b: sf.Value) -> sf.Result:
    return sf.add(env, fmt, a, b, subtract=True)


def _sqrt(env: sf.Env, fmt: sf.Format, x: int, y: int) -> sf.Result:
    return sf.sqrt(env, fmt, sf.unpack(fmt, y))


def _minmax(want: sf.Order) -> Lane:
    def lane(env: sf.Env, fmt: sf.Format, x: int, y: int) -> sf.Result:
        a, fa = sf.operand(env, sf.unpack(fmt, x))
        b, fb = sf.operand(env, sf.unpack(fmt, y))
        if a.is_nan or b.is_nan:
            pick_a, flags = False, sf.IE
        else:
            order, _ = sf.compare(env, a, b, signalling=False)
            pick_a, flags = order == want, fa | fb
        value, raw = (a, x) if pick_a else (b, y)
        # DAZ: a denormal operand is delivered as the zero it was read as.
        bits = sf.zero(fmt, value.sign) if value.cls == sf.Cls.ZERO else raw
        return sf.Result(bits, flags)
    return lane


def _approx(fmt: sf.Format, sign: int, den_sig: int, den_exp: int, root: bool) -> int:
    """(1 or 1/sqrt) of den_sig*2**den_exp, rounded to 12 significant bits, tiny -> 0."""
    if root:
        r, e, sticky = sf.exact_sqrt(den_sig, den_exp, 40)
        q, qe, sticky2 = sf.exact_quotient(1, 0, r, e, 40)
        sticky = sticky or sticky2
    else:
        q, qe, sticky = sf.exact_quotient(1, 0, den_sig, den_exp, 40)
    env = sf.Env(rounding=sf.RN, precision=12, ftz=True)
    return sf.round_pack(env, fmt, sign, q, qe, sticky).bits


def _reciprocal(root: bool) -> Lane:
    def lane(env: sf.Env, fmt: sf.Format, x: int, y: int) -> sf.Result:
        v = sf.unpack(fmt, y)
        if v.is_nan:
            return sf.Result(sf.nan_bits(fmt, v), 0)
        if v.cls in (sf.Cls.ZERO, sf.Cls.DENORMAL):
            return sf.Result(sf.infinity(fmt, v.sign), 0)
        if root and v.sign:
            return sf.Result(sf.pack(fmt, sf.DEFAULT_NAN), 0)
        if v.cls == sf.Cls.INF:
            return sf.Result(sf.zero(fmt, v.sign), 0)
        return sf.Result(_approx(fmt, v.sign, v.sig, v.exp, root), 0)
    return lane


F32, F64 = sf.F32, sf.F64

# mnemonic -> (lane operation, lane format, packed)
ROWS: dict[int, tuple[Lane, sf.Format, bool]] = {}
for _name, _lane in (("ADD", _binary(sf.add)), ("SUB", _binary(_sub)),
                     ("MUL", _binary(sf.mul)), ("DIV", _binary(sf.div)),
                     ("SQRT", _sqrt), ("MIN", _minmax(sf.Order.LESS)),
                     ("MAX", _minmax(sf.Order.GREATER))):
    ROWS[getattr(M, _name + "PS")] = (_lane, F32, True)
    ROWS[getattr(M, _name + "PD")] = (_lane, F64, True)
    ROWS[getattr(M, _name + "SS")] = (_lane, F32, False)
    ROWS[getattr(M, _name + "SD")] = (_lane, F64, False)
ROWS[M.RCPPS] = (_reciprocal(False), F32, True)
ROWS[M.RCPSS] = (_reciprocal(False), F32, False)
ROWS[M.RSQRTPS] = (_reciprocal(True), F32, True)
ROWS[M.RSQRTSS] = (_reciprocal(True), F32, False)


def apply(cpu, lane: Lane, fmt: sf.Format, count: int, dst: int, src: int) -> int:  # noqa: ANN001
    """`lane` over the low `count` lanes of dst and src; MXCSR updated, #XM raised."""
    env = env_of(cpu.mxcsr)
    bits = fmt.width
    results = [lane(env, fmt, x, y) for x, y in zip(lanes(dst, bits, count),
                                                    lanes(src, bits, count), strict=True)]
    flags = 0
    for r in results:
        flags |= r.flags
    commit(cpu, flags)
    return merge(dst, [r.bits for r in results], bits)


@semantic(*ROWS)
def _arith(b: Insn) -> Handler:
    require_features(b)
    lane, fmt, packed = ROWS[b.mnemonic]
    count = 128 // fmt.width if packed else 1
    body = Body(b, sse_check)
    src = body.get(1)
    return body.add(body.put(0, f"{b.const(apply)}(cpu, {b.const(lane)}, {b.const(fmt)}, "
                                f"{count}, {body.get(0)}, {src})")).compile()
