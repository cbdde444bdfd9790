"""The software TLB's hit path inlined into block code, for loads and stores.

Instruction bodies access data memory as `read(S, ea, N)` and
`write(S, ea, N, value)` (the interpreter's `Cpu.read`/`Cpu.write`).  The
common case -- offset within the segment limit, the linear page in the
current privilege's page dict (interp/cpu.py: a page is there only when it is
RAM, mapped for this access and not watched by a hook nor holding translated
code), the access not crossing the page -- becomes one dict lookup and one
struct call in the block; everything else (limit violations, TLB misses, page
crossings, MMIO, code pages, non-canonical addresses) still calls `read` /
`write` out of line, so faults and their order are the interpreter's.

The page dicts and the linear-address mask are fetched once per block entry:
within a block they do not change (only a block's last instruction may change
privilege, mode or paging; a flush clears the dicts in place).  Inline hits
are not counted in the interpreter's `tlb hit` statistic.
"""

from __future__ import annotations

import re

from pyvmm.engines.interp.cpu import _PACK, _UNPACK

# The offset is `ea` (a memory operand) or `nsp` (a push or pop: interp/builder.py).
_READ = re.compile(r"(?<![\w.])read\(([0-5]), (ea|nsp), ([1248])\)")
_WRITE = re.compile(r"\A(\s*)write\(([0-5]), (ea|nsp), ([1248]), (.+)\)\Z")
_MASKS = {1: "0xFF", 2: "0xFFFF", 4: "0xFFFFFFFF", 8: "0xFFFFFFFFFFFFFFFF"}


def _read(match: re.Match[str]) -> str:
    seg, off, size = match.group(1), match.group(2), int(match.group(3))
    hit = "_jram[_jpg | _jl & 4095]" if size == 1 else f"_jun{size}(_jram, _jpg | _jl & 4095)[0]"
    return (f"({hit} if _jslo[{seg}] <= {off} <= _jshi[{seg}] - {size - 1} and "
            f"(_jpg := _jrd.get((_jl := _jsb[{seg}] + {off} & _jlm) >> 12)) is not None and "
            f"_jl & 4095 <= {4096 - size} else read({seg}, {off}, {size}))")


def inline(line: str) -> tuple[str, bool, bool]:
    """`line` with its data accesses inlined; (text, reads inlined, write inlined)."""
    reads = False
    if "read(" in line:
        line, count = _READ.subn(_read, line)
        reads = count > 0
    match = _WRITE.match(line)
    if match is None:
        return line, reads, False
    pad, seg, off = match.group(1), match.group(2), match.group(3)
    size, value = int(match.group(4)), match.group(5)
    if value.count("(") != value.count(")"):
        return line, reads, False
    return (f"{pad}if _jslo[{seg}] <= {off} <= _jswhi[{seg}] - {size - 1} and "
            f"(_jpg := _jwr.get((_jl := _jsb[{seg}] + {off} & _jlm) >> 12)) is not None and "
            f"_jl & 4095 <= {4096 - size}:\n"
            f"{pad}    _jpk{size}(_jram, _jpg | _jl & 4095, ({value}) & {_MASKS[size]})\n"
            f"{pad}else:\n"
            f"{pad}    write({seg}, {off}, {size}, {value})"), reads, True


# Closure values the inlined code names (bound once per translated block).
def closure(cpu: object) -> dict[str, object]:
    return {
        "_jslo": cpu.seg_lo, "_jshi": cpu.seg_hi, "_jswhi": cpu.seg_whi,  # type: ignore
        "_jsb": cpu.seg_base, "_jram": cpu.ram,  # type: ignore[attr-defined]
        "_jun2": _UNPACK[2], "_jun4": _UNPACK[4], "_jun8": _UNPACK[8],
        "_jpk1": _PACK[1], "_jpk2": _PACK[2], "_jpk4": _PACK[4], "_jpk8": _PACK[8],
    }


def prelude(reads: bool, writes: bool) -> list[str]:
    """Block-entry statements the inlined accesses need."""
    out = ["_jlm = cpu.lin_mask"] if reads or writes else []
    if reads:
        out.append("_jrd = cpu.rd")
    if writes:
        out.append("_jwr = cpu.wr")
    return out
