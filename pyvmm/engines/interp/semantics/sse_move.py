"""MMX/SSE/SSE2 data movement, masks, MXCSR access, EMMS, CLFLUSH, MOVNTI (SDM Vol. 2).

One row per mnemonic: how the destination is formed from the operands, and
whether a 16-byte memory operand must be aligned (SDM: MOVUPS, MOVUPD,
MOVDQU and MASKMOVDQU are the unaligned forms; the others raise #GP(0)).

Facts (SDM Vol. 2 instruction pages):
- MOVD/MOVQ zero-extend into an XMM or MM destination; MOVQ xmm, xmm/m64
  clears bits 127:64.
- MOVSS/MOVSD from memory clear the rest of the register; register to
  register they replace only the low element.
- MOVLPS/MOVLPD/MOVHPS/MOVHPD move one quadword, the other half stays;
  MOVHLPS/MOVLHPS move a quadword between halves.
- PMOVMSKB/MOVMSKPS/MOVMSKPD gather the sign bit of each lane into a
  zero-extended general register.
- PEXTRW zero-extends the selected word (imm8 modulo the lane count); PINSRW
  replaces it with the low word of the source.
- MASKMOVDQU/MASKMOVQ store the bytes whose mask byte has bit 7 set at
  DS:rDI (segment override allowed).
- LDMXCSR raises #GP(0) when a reserved bit (31:16, MXCSR_MASK 0xFFFF) is set
  (SDM Vol. 1 §11.6.6).
- CLFLUSH checks the line like a byte load; MOVNTI is an ordinary store
  here (no caches are modelled); neither depends on CR0/CR4 (SDM "CLFLUSH",
  "MOVNTI").
- EMMS marks every x87 register empty (tag word 0xFFFF, SDM "EMMS").
"""

from __future__ import annotations

from collections.abc import Callable

from iced_x86 import Mnemonic as M

from pyvmm.engines.interp.builder import Handler, Insn
from pyvmm.engines.interp.faults import GP, CpuFault
from pyvmm.engines.interp.semantics import semantic
from pyvmm.engines.interp.semantics._simd import (
    Body,
    check_for,
    mmx_check,
    reg_kind,
    require_features,
    sse_check,
    width_of,
)

MASK64 = (1 << 64) - 1
HIGH64 = MASK64 << 64
MXCSR_MASK = 0xFFFF  # writable MXCSR bits (FXSAVE's MXCSR_MASK on DAZ-capable CPUs)


def _copy(body: Body, aligned: bool) -> None:
    body.add(body.put(0, body.get(1, aligned), aligned))


def _zero_extend(size: int) -> Callable[[Body, bool], None]:
    """MOVD (4) / MOVQ (8): the low `size` bytes, zero-extended into the destination."""
    def gen(body: Body, aligned: bool) -> None:
        mask = body.b.const((1 << (8 * size)) - 1)
        body.add(body.put(0, f"({body.get(1)}) & {mask}"))
    return gen


def _scalar(size: int) -> Callable[[Body, bool], None]:
    """MOVSS (4) / MOVSD (8)."""
    def gen(body: Body, aligned: bool) -> None:
        b = body.b
        mask = b.const((1 << (8 * size)) - 1)
        if reg_kind(b, 0) == "xmm" and reg_kind(b, 1) == "xmm":
            body.add(body.put(0, f"({body.get(0)} & ~{mask}) | ({body.get(1)} & {mask})"))
        else:
            body.add(body.put(0, f"({body.get(1)}) & {mask}"))
    return gen


def _low_quad(body: Body, aligned: bool) -> None:
    """MOVLPS/MOVLPD."""
    if reg_kind(body.b, 0) == "xmm":
        body.add(body.put(0, f"({body.get(0)} & {body.b.const(HIGH64)}) | {body.get(1)}"))
    else:
        body.add(body.put(0, f"{body.get(1)} & {body.b.const(MASK64)}"))


def _high_quad(body: Body, aligned: bool) -> None:
    """MOVHPS/MOVHPD."""
    if reg_kind(body.b, 0) == "xmm":
        body.add(body.put(0, f"({body.get(0)} & {body.b.const(MASK64)}) | ({body.get(1)} << 64)"))
    else:
        body.add(body.put(0, f"{body.get(1)} >> 64"))


def _movhlps(body: Body, aligned: bool) -> None:
    body.add(body.put(0, f"({body.get(0)} & {body.b.const(HIGH64)}) | ({body.get(1)} >> 64)"))


def _movlhps(body: Body, aligned: bool) -> None:
    m = body.b.const(MASK64)
    body.add(body.put(0, f"({body.get(0)} & {m}) | (({body.get(1)} & {m}) << 64)"))


def _sign_mask(bits: int) -> Callable[[Body, bool], None]:
    """PMOVMSKB (8) / MOVMSKPS (32) / MOVMSKPD (64)."""
    def gen(body: Body, aligned: bool) -> None:
        b = body.b
        count = width_of(b, 1) // bits
        body.add(f"v = {body.get(1)}",
                 body.put(0, f"{b.const(_gather)}(v, {bits}, {count})"))
    return gen


def _gather(value: int, bits: int, count: int) -> int:
    return sum(((value >> (bits * k + bits - 1)) & 1) << k for k in range(count))


def _pextrw(body: Body, aligned: bool) -> None:
    b = body.b
    lanes = width_of(b, 1) // 16
    shift = 16 * ((b.ins.immediate(2) & 0xFF) % lanes)
    body.add(body.put(0, f"({body.get(1)} >> {b.const(shift)}) & 0xFFFF"))


def _pinsrw(body: Body, aligned: bool) -> None:
    b = body.b
    lanes = width_of(b, 0) // 16
    shift = 16 * ((b.ins.immediate(2) & 0xFF) % lanes)
    body.add(f"w = ({body.get(1)}) & 0xFFFF",
             body.put(0, f"({body.get(0)} & ~(0xFFFF << {b.const(shift)})) "
                         f"| (w << {b.const(shift)})"))


def _maskmov(cpu, seg: int, off: int, mask: int, data: int, mask_bytes: int,  # noqa: ANN001
             count: int) -> None:
    if off > mask - (count - 1):  # the operand crosses the end of the address space/limit
        raise cpu.canonical_fault(seg)
    for k in range(count):
        if (mask_bytes >> (8 * k + 7)) & 1:
            cpu.write(seg, (off + k) & mask, 1, (data >> (8 * k)) & 0xFF)


def _maskmove(body: Body, aligned: bool) -> None:
    b = body.b
    count = width_of(b, 1) // 8
    rdi = f"(regs[7] & {b.const(b.addr_mask)})"
    body.add(f"{b.const(_maskmov)}(cpu, {b.seg()}, {rdi}, {b.const(b.addr_mask)}, "
             f"{body.get(1)}, {body.get(2)}, {count})")


def _movq2dq(body: Body, aligned: bool) -> None:
    body.add(body.put(0, f"{body.get(1)} & {body.b.const(MASK64)}"))


# mnemonic -> (generator, 16-byte memory operand must be aligned)
ROWS: dict[int, tuple[Callable[[Body, bool], None], bool]] = {
    M.MOVDQA: (_copy, True), M.MOVAPS: (_copy, True), M.MOVAPD: (_copy, True),
    M.MOVDQU: (_copy, False), M.MOVUPS: (_copy, False), M.MOVUPD: (_copy, False),
    M.MOVNTDQ: (_copy, True), M.MOVNTPS: (_copy, True), M.MOVNTPD: (_copy, True),
    M.MOVNTQ: (_copy, True),
    M.MOVD: (_zero_extend(4), True), M.MOVQ: (_zero_extend(8), True),
    M.MOVSS: (_scalar(4), True), M.MOVSD: (_scalar(8), True),
    M.MOVLPS: (_low_quad, True), M.MOVLPD: (_low_quad, True),
    M.MOVHPS: (_high_quad, True), M.MOVHPD: (_high_quad, True),
    M.MOVHLPS: (_movhlps, True), M.MOVLHPS: (_movlhps, True),
    M.PMOVMSKB: (_sign_mask(8), True), M.MOVMSKPS: (_sign_mask(32), True),
    M.MOVMSKPD: (_sign_mask(64), True),
    M.PEXTRW: (_pextrw, True), M.PINSRW: (_pinsrw, True),
    M.MASKMOVDQU: (_maskmove, False), M.MASKMOVQ: (_maskmove, False),
    M.MOVQ2DQ: (_movq2dq, True), M.MOVDQ2Q: (_movq2dq, True),
}


@semantic(*ROWS)
def _move(b: Insn) -> Handler:
    require_features(b)
    gen, aligned = ROWS[b.mnemonic]
    body = Body(b, check_for(b))
    gen(body, aligned)
    return body.compile()


def _ldmxcsr_value(value: int) -> int:
    if value & ~MXCSR_MASK:
        raise CpuFault(GP, 0)
    return value


@semantic(M.LDMXCSR)
def _ldmxcsr(b: Insn) -> Handler:
    require_features(b)
    body = Body(b, sse_check)
    return body.add(f"cpu.mxcsr = {b.const(_ldmxcsr_value)}({body.get(0)})").compile()


@semantic(M.STMXCSR)
def _stmxcsr(b: Insn) -> Handler:
    require_features(b)
    body = Body(b, sse_check)
    return body.add(body.put(0, "cpu.mxcsr")).compile()


@semantic(M.EMMS)
def _emms(b: Insn) -> Handler:
    require_features(b)
    return Body(b, mmx_check).add("cpu.fpu.emms()").compile()


def _no_check(cpu) -> None:  # noqa: ANN001
    """CLFLUSH and MOVNTI depend only on CPUID, not on CR0/CR4."""


@semantic(M.CLFLUSH)
def _clflush(b: Insn) -> Handler:
    require_features(b)
    body = Body(b, _no_check)
    return body.add(f"{body.get(0)}").compile()


@semantic(M.MOVNTI)
def _movnti(b: Insn) -> Handler:
    require_features(b)
    body = Body(b, _no_check)
    return body.add(body.put(0, b.get(1))).compile()
