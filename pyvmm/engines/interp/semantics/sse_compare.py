"""SSE/SSE2 floating-point compares: CMPPS/PD/SS/SD, COMISS/COMISD, UCOMISS/UCOMISD.

Facts (SDM Vol. 2 "CMPPS", Table 3-1 (the predicates of imm8[2:0]);
"COMISS", "UCOMISS"):
- CMPxx lanes become all ones (true) or zero.  Predicates 0-7: EQ, LT, LE,
  UNORD, NEQ, NLT, NLE, ORD.  LT, LE, NLT and NLE signal IE on a QNaN
  operand too; the others only on an SNaN.  Legacy SSE encodings use only
  imm8[2:0].  A denormal operand raises DE (DAZ: it is a zero, no DE).
- COMISS/COMISD set ZF, PF, CF to 111 (unordered), 000 (greater), 001
  (less) or 100 (equal) and clear OF, SF and AF.  COMIS* signal IE on any
  NaN, UCOMIS* only on an SNaN.  With an unmasked exception RFLAGS is left
  unchanged (#XM/#UD, _ssefp.commit).
"""

from __future__ import annotations

from iced_x86 import Mnemonic as M

from pyvmm.engines.interp import flags as fl
from pyvmm.engines.interp import softfloat as sf
from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.semantics._simd import Body, require_features, sse_check
from pyvmm.engines.interp.semantics._ssefp import commit, env_of, lanes, merge

O = sf.Order
# imm8[2:0] -> (orders for which the predicate is true, signals on a QNaN)
PREDICATES: tuple[tuple[frozenset[sf.Order], bool], ...] = (
    (frozenset({O.EQUAL}), False),                                  # EQ
    (frozenset({O.LESS}), True),                                    # LT
    (frozenset({O.LESS, O.EQUAL}), True),                           # LE
    (frozenset({O.UNORDERED}), False),                              # UNORD
    (frozenset({O.LESS, O.GREATER, O.UNORDERED}), False),           # NEQ
    (frozenset({O.EQUAL, O.GREATER, O.UNORDERED}), True),           # NLT
    (frozenset({O.GREATER, O.UNORDERED}), True),                    # NLE
    (frozenset({O.LESS, O.EQUAL, O.GREATER}), False),               # ORD
)

# mnemonic -> (lane format, packed)
CMP_ROWS: dict[int, tuple[sf.Format, bool]] = {
    M.CMPPS: (sf.F32, True), M.CMPPD: (sf.F64, True),
    M.CMPSS: (sf.F32, False), M.CMPSD: (sf.F64, False),
}

# mnemonic -> (lane format, signals IE on a QNaN)
COMI_ROWS: dict[int, tuple[sf.Format, bool]] = {
    M.COMISS: (sf.F32, True), M.COMISD: (sf.F64, True),
    M.UCOMISS: (sf.F32, False), M.UCOMISD: (sf.F64, False),
}

# Order -> ZF PF CF
COMI_FLAGS = {O.UNORDERED: fl.ZF | fl.PF | fl.CF, O.GREATER: 0, O.LESS: fl.CF, O.EQUAL: fl.ZF}


def compare_lanes(cpu, fmt: sf.Format, count: int, predicate: int, dst: int,  # noqa: ANN001
                  src: int) -> int:
    true_orders, signalling = PREDICATES[predicate]
    env = env_of(cpu.mxcsr)
    bits = fmt.width
    ones = (1 << bits) - 1
    out, flags = [], 0
    for x, y in zip(lanes(dst, bits, count), lanes(src, bits, count), strict=True):
        order, f = sf.compare(env, sf.unpack(fmt, x), sf.unpack(fmt, y), signalling)
        flags |= f
        out.append(ones if order in true_orders else 0)
    commit(cpu, flags)
    return merge(dst, out, bits)


def comi(cpu, fmt: sf.Format, signalling: bool, a: int, b: int) -> int:  # noqa: ANN001
    mask = (1 << fmt.width) - 1
    order, flags = sf.compare(env_of(cpu.mxcsr), sf.unpack(fmt, a & mask),
                              sf.unpack(fmt, b & mask), signalling)
    commit(cpu, flags)
    return COMI_FLAGS[order]


@semantic(*CMP_ROWS)
def _cmp(b: Insn) -> Handler:
    require_features(b)
    fmt, packed = CMP_ROWS[b.mnemonic]
    count = 128 // fmt.width if packed else 1
    body = Body(b, sse_check)
    src = body.get(1)
    predicate = b.ins.immediate(2) & 7
    return body.add(body.put(0, f"{b.const(compare_lanes)}(cpu, {b.const(fmt)}, {count}, "
                                f"{predicate}, {body.get(0)}, {src})")).compile()


@semantic(*COMI_ROWS)
def _comi(b: Insn) -> Handler:
    require_features(b)
    fmt, signalling = COMI_ROWS[b.mnemonic]
    body = Body(b, sse_check)
    src = body.get(1)
    return body.add(f"cpu.set_arith({b.const(comi)}(cpu, {b.const(fmt)}, {signalling}, "
                    f"{body.get(0)}, {src}))").compile()
