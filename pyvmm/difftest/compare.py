"""Compare the native and the engine outcome of one block.

Compared: the GPRs the mode can see (64-bit: all 16 in full; 32/16-bit: the
low 32 bits of the first 8, and only SP of ESP in 16-bit code, whose upper
half Linux's espfix may rewrite), the defined status flags and DF, RIP, the
data area, the XMM/MM registers and MXCSR for SIMD blocks (pyvmm.difftest.simd),
and the exception vector (and its error code; for #PF only the
P and W/R bits, since native code runs at CPL 3 and the engine at CPL 0,
SDM Vol. 3A §4.7; for #PF also the faulting linear address, CR2).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyvmm.cpu.state import GPR_NAMES
from pyvmm.difftest import flags as flaginfo
from pyvmm.difftest import simd
from pyvmm.difftest.encode import EncodedCase
from pyvmm.oracle.result import ExecResult

PF_VECTOR = 14
PF_COMPARED_BITS = 0x3  # P and W/R (SDM Vol. 3A Figure 4-12)
FLAG_NAMES = (("CF", 0), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("DF", 10), ("OF", 11))


@dataclass
class Difference:
    what: str
    native: str
    engine: str


def gpr_masks(mode: int) -> list[tuple[str, int]]:
    """(name, mask) of every compared GPR."""
    if mode == 64:
        return [(name, (1 << 64) - 1) for name in GPR_NAMES]
    masks = [(name, 0xFFFFFFFF) for name in GPR_NAMES[:8]]
    if mode == 16:
        masks[4] = ("rsp", 0xFFFF)
    return masks


def flags_text(value: int, mask: int) -> str:
    return " ".join(f"{name}={value >> bit & 1}" for name, bit in FLAG_NAMES if mask >> bit & 1)


def compared_flags(enc: EncodedCase, native: ExecResult) -> int:
    """Flags with an architecturally defined value where the native run stopped."""
    before, at_end = flaginfo.analyse(enc.decoded, enc.trailer_ip)
    if native.vector is None and not native.timed_out:
        undefined = at_end
    else:
        undefined = before.get(native.rip, flaginfo.STATUS_FLAGS)
    return flaginfo.COMPARED_FLAGS & ~undefined


def _vector_text(result: ExecResult) -> str:
    if result.timed_out:
        return "timeout"
    if result.vector is None:
        return "none"
    text = f"#{result.vector}"
    if result.error_code is not None:
        text += f" err={result.error_code:#x}"
    return text


def _byte_ranges(a: bytes, b: bytes) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            if ranges and ranges[-1][1] == i:
                ranges[-1] = (ranges[-1][0], i + 1)
            else:
                ranges.append((i, i + 1))
    return ranges


def compare(enc: EncodedCase, native: ExecResult, engine: ExecResult,
            data_base: int) -> list[Difference]:
    diffs: list[Difference] = []
    if engine.note:
        diffs.append(Difference("engine", "", engine.note))
    if native.vector != engine.vector or native.timed_out != engine.timed_out:
        diffs.append(Difference("exception", _vector_text(native), _vector_text(engine)))
    elif native.vector is not None and native.error_code is not None \
            and engine.error_code is not None:
        mask = PF_COMPARED_BITS if native.vector == PF_VECTOR else 0xFFFFFFFF
        if (native.error_code ^ engine.error_code) & mask:
            diffs.append(Difference("error code", f"{native.error_code:#x}",
                                    f"{engine.error_code:#x}"))
    if native.vector == PF_VECTOR == engine.vector and native.fault_address is not None \
            and native.fault_address != engine.fault_address:
        diffs.append(Difference("CR2", f"{native.fault_address:#x}",
                                f"{engine.fault_address or 0:#x}"))
    if native.rip != engine.rip:
        diffs.append(Difference("rip", f"{native.rip:#x}", f"{engine.rip:#x}"))
    width = 16 if enc.mode == 64 else 8
    for index, (name, mask) in enumerate(gpr_masks(enc.mode)):
        if (native.gprs[index] ^ engine.gprs[index]) & mask:
            diffs.append(Difference(name, f"{native.gprs[index] & mask:#0{width + 2}x}",
                                    f"{engine.gprs[index] & mask:#0{width + 2}x}"))
    mask = compared_flags(enc, native)
    if (native.rflags ^ engine.rflags) & mask:
        diffs.append(Difference("flags", flags_text(native.rflags, mask),
                                flags_text(engine.rflags, mask)))
    if enc.case.fxsave is not None and native.fxsave and engine.fxsave:
        for what, n, e in simd.compare_state(enc.mode, native.fxsave, engine.fxsave):
            diffs.append(Difference(what, n, e))
    for start, end in _byte_ranges(native.data, engine.data)[:8]:
        end = min(end, start + 16)
        diffs.append(Difference(f"mem[{data_base + start:#x}]", native.data[start:end].hex(),
                                engine.data[start:end].hex()))
    return diffs
